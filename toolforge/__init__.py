"""toolforge: train DSPy agents by forging their functions (the AgentOptimizer method as a DSPy optimizer).

import toolforge as tf

area = tf.ForgedFunction.from_callable(area)          # or ForgedFunction(name, description, parameters, code)
agent = tf.ToolAgent("question -> answer: float", toolset=tf.Toolset([area]), tools=[tf.python_tool()])
"""

from toolforge import tools  # noqa: F401  installs the runtime of Toolset.as_tools
from toolforge.actions import Action, AddFunction, RemoveFunction, ReviseFunction
from toolforge.agent import ToolAgent, python_tool
from toolforge.cache import CacheStats, EvaluationCache
from toolforge.data import load_jsonl
from toolforge.errors import FunctionCallError, FunctionError, SandboxError, ToolforgeError, ToolsetError
from toolforge.evaluate import Evaluator
from toolforge.function import ForgedFunction
from toolforge.lm import LocalLM, resolve_lm
from toolforge.optimizer import ActionOutcome, FunctionOptimizer, OptimizationReport, StepReport
from toolforge.proposer import ProposedAction, Proposer
from toolforge.react import ReAct
from toolforge.records import EvaluationRun, ExampleRecord
from toolforge.sandbox import CallResult, Sandbox, default_sandbox
from toolforge.toolset import FunctionRevision, Toolset, ToolsetDiff
from toolforge.trace import FunctionCall, record_calls

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ActionOutcome",
    "AddFunction",
    "CacheStats",
    "CallResult",
    "EvaluationCache",
    "EvaluationRun",
    "Evaluator",
    "ExampleRecord",
    "ForgedFunction",
    "FunctionCall",
    "FunctionCallError",
    "FunctionError",
    "FunctionOptimizer",
    "FunctionRevision",
    "LocalLM",
    "OptimizationReport",
    "ProposedAction",
    "Proposer",
    "ReAct",
    "RemoveFunction",
    "ReviseFunction",
    "Sandbox",
    "SandboxError",
    "StepReport",
    "ToolAgent",
    "ToolforgeError",
    "Toolset",
    "ToolsetDiff",
    "ToolsetError",
    "default_sandbox",
    "load_jsonl",
    "python_tool",
    "record_calls",
    "resolve_lm",
]
