"""Ready DSPy programs built on ToolAgent, each with data and a metric."""
