"""Generate the problem sets of `programs/`: deterministic (seeded), exact answers, many problem families.

    python programs/data/generate.py            # writes math_{train,test}.jsonl and table_{train,test}.jsonl here

Each line is one problem: the input fields of its program, `answer` (a number), and `family` (which generator made
it). Every family is one where a forged function helps: the same computation recurs with different numbers.
Running it again writes byte-identical files (a test checks this).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = {"train": 200, "test": 200}
SEEDS = {"math": 1729, "table": 2718}

Problem = dict[str, object]


# ------------------------------------------------------------------------------------------------- math
def compound_interest(r: random.Random) -> Problem:
    principal, rate, years = r.choice([500, 1000, 1500, 2000, 5000]), r.choice([2, 3, 4, 5, 6, 8]), r.randint(2, 10)
    amount = round(principal * (1 + rate / 100) ** years, 2)
    q = (
        f"${principal} is invested at {rate}% interest compounded annually. What is the balance after {years} "
        "years, rounded to the cent?"
    )
    return {"question": q, "answer": amount}


def simple_interest(r: random.Random) -> Problem:
    principal, rate, years = r.randint(2, 90) * 100, r.choice([1.5, 2, 2.5, 3, 4, 5]), r.randint(1, 8)
    q = f"How much simple interest does ${principal} earn at {rate}% per year over {years} years?"
    return {"question": q, "answer": round(principal * rate / 100 * years, 2)}


def gcd(r: random.Random) -> Problem:
    k = r.randint(2, 30)
    a, b = k * r.randint(2, 40), k * r.randint(2, 40)
    return {"question": f"What is the greatest common divisor of {a} and {b}?", "answer": math.gcd(a, b)}


def lcm(r: random.Random) -> Problem:
    a, b = r.randint(4, 60), r.randint(4, 60)
    return {"question": f"What is the least common multiple of {a} and {b}?", "answer": a * b // math.gcd(a, b)}


def count_multiples(r: random.Random) -> Problem:
    lo = r.randint(1, 200)
    hi, k = lo + r.randint(50, 900), r.randint(3, 17)
    count = hi // k - (lo - 1) // k
    return {"question": f"How many integers from {lo} to {hi} inclusive are divisible by {k}?", "answer": count}


_UNITS = [
    ("kilometers", "miles", 0.621371),
    ("miles", "kilometers", 1.609344),
    ("kilograms", "pounds", 2.204623),
    ("pounds", "kilograms", 0.453592),
    ("liters", "gallons", 0.264172),
    ("inches", "centimeters", 2.54),
]


def unit_conversion(r: random.Random) -> Problem:
    source, target, factor = r.choice(_UNITS)
    value = r.randint(2, 500)
    q = f"Convert {value} {source} to {target}. Round to two decimal places."
    return {"question": q, "answer": round(value * factor, 2)}


def temperature(r: random.Random) -> Problem:
    if r.random() < 0.5:
        f = r.randint(-40, 230)
        return {
            "question": f"What is {f} degrees Fahrenheit in Celsius, rounded to one decimal?",
            "answer": round((f - 32) * 5 / 9, 1),
        }
    c = r.randint(-40, 110)
    return {
        "question": f"What is {c} degrees Celsius in Fahrenheit, rounded to one decimal?",
        "answer": round(c * 9 / 5 + 32, 1),
    }


def days_between(r: random.Random) -> Problem:
    start = dt.date(2020, 1, 1) + dt.timedelta(days=r.randint(0, 1500))
    end = start + dt.timedelta(days=r.randint(1, 700))
    return {
        "question": f"How many days are there from {start.isoformat()} to {end.isoformat()}?",
        "answer": (end - start).days,
    }


def day_of_year(r: random.Random) -> Problem:
    day = dt.date(r.randint(2000, 2030), 1, 1) + dt.timedelta(days=r.randint(0, 364))
    return {"question": f"What day of the year (1 to 366) is {day.isoformat()}?", "answer": day.timetuple().tm_yday}


def percent_change(r: random.Random) -> Problem:
    old = r.randint(20, 900)
    new = max(1, old + r.randint(-old // 2, old))
    q = f"A price changes from {old} to {new}. What is the percent change, rounded to two decimals?"
    return {"question": q, "answer": round((new - old) / old * 100, 2)}


def combinations(r: random.Random) -> Problem:
    n = r.randint(5, 25)
    k = r.randint(2, min(6, n - 1))
    return {"question": f"In how many ways can {k} people be chosen from a group of {n}?", "answer": math.comb(n, k)}


MATH_FAMILIES: list[Callable[[random.Random], Problem]] = [
    compound_interest,
    simple_interest,
    gcd,
    lcm,
    count_multiples,
    unit_conversion,
    temperature,
    days_between,
    day_of_year,
    percent_change,
    combinations,
]


# ------------------------------------------------------------------------------------------------ tables
_NAMES = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jade", "Kai", "Lena"]
_ITEMS = ["apples", "pencils", "tickets", "books", "stamps", "shells", "cards", "marbles"]
_CITIES = ["Avon", "Brill", "Corfe", "Dent", "Esk", "Frome", "Gower", "Hythe"]


def _table(header: list[str], rows: list[list[object]]) -> str:
    return "\n".join(" | ".join(str(c) for c in line) for line in [header, *rows])


def _people(r: random.Random, lo: int, hi: int) -> tuple[list[str], list[int]]:
    names = r.sample(_NAMES, r.randint(4, 7))
    return names, [r.randint(lo, hi) for _ in names]


def column_sum(r: random.Random) -> Problem:
    item = r.choice(_ITEMS)
    names, values = _people(r, 3, 99)
    table = _table(["name", item], [[n, v] for n, v in zip(names, values, strict=True)])
    return {"table": table, "question": f"How many {item} do they have in all?", "answer": sum(values)}


def column_mean(r: random.Random) -> Problem:
    names, values = _people(r, 10, 100)
    table = _table(["student", "score"], [[n, v] for n, v in zip(names, values, strict=True)])
    return {
        "table": table,
        "question": "What is the mean score? Round to two decimals.",
        "answer": round(statistics.mean(values), 2),
    }


def column_median(r: random.Random) -> Problem:
    cities = r.sample(_CITIES, r.choice([5, 7]))
    values = [r.randint(0, 60) for _ in cities]
    table = _table(["town", "rainy days"], [[c, v] for c, v in zip(cities, values, strict=True)])
    return {"table": table, "question": "What is the median number of rainy days?", "answer": statistics.median(values)}


def column_range(r: random.Random) -> Problem:
    names, values = _people(r, 100, 999)
    table = _table(["runner", "meters"], [[n, v] for n, v in zip(names, values, strict=True)])
    return {
        "table": table,
        "question": "What is the range of the distances in meters?",
        "answer": max(values) - min(values),
    }


def rate_of_change(r: random.Random) -> Problem:
    start = r.randint(2010, 2018)
    years = list(range(start, start + r.randint(4, 6)))
    values = [r.randint(10, 90)]
    for _ in years[1:]:
        values.append(max(0, values[-1] + r.randint(-15, 20)))
    i = r.randint(0, len(years) - 2)
    j = r.randint(i + 1, len(years) - 1)
    table = _table(["year", "members"], [[y, v] for y, v in zip(years, values, strict=True)])
    q = f"What was the rate of change in members per year between {years[i]} and {years[j]}? Round to two decimals."
    return {"table": table, "question": q, "answer": round((values[j] - values[i]) / (years[j] - years[i]), 2)}


def filter_count(r: random.Random) -> Problem:
    names, values = _people(r, 20, 100)
    threshold = r.choice([40, 50, 60, 70])
    table = _table(["player", "points"], [[n, v] for n, v in zip(names, values, strict=True)])
    q = f"How many players scored more than {threshold} points?"
    return {"table": table, "question": q, "answer": sum(v > threshold for v in values)}


def lookup_total(r: random.Random) -> Problem:
    items = r.sample(["pen", "notebook", "eraser", "ruler", "stapler", "marker", "folder"], 4)
    prices = [round(r.randint(25, 900) / 100, 2) for _ in items]
    a, b = r.sample(range(4), 2)
    qa, qb = r.randint(1, 5), r.randint(1, 5)
    table = _table(["item", "price"], [[i, f"${p:.2f}"] for i, p in zip(items, prices, strict=True)])
    q = f"How much do {qa} {items[a]}s and {qb} {items[b]}s cost in total, in dollars?"
    return {"table": table, "question": q, "answer": round(qa * prices[a] + qb * prices[b], 2)}


def difference(r: random.Random) -> Problem:
    cities = r.sample(_CITIES, 5)
    values = [r.randint(1000, 9000) for _ in cities]
    a, b = r.sample(range(5), 2)
    table = _table(["city", "visitors"], [[c, v] for c, v in zip(cities, values, strict=True)])
    q = f"How many more visitors did {cities[a]} have than {cities[b]}?"
    return {"table": table, "question": q, "answer": values[a] - values[b]}


TABLE_FAMILIES: list[Callable[[random.Random], Problem]] = [
    column_sum,
    column_mean,
    column_median,
    column_range,
    rate_of_change,
    filter_count,
    lookup_total,
    difference,
]


# ------------------------------------------------------------------------------------------------- write
def problems(families: list[Callable[[random.Random], Problem]], seed: int, n: int) -> list[Problem]:
    """`n` distinct problems (no two with the same inputs), the families taking turns."""
    rng = random.Random(seed)
    out: list[Problem] = []
    seen: set[str] = set()
    for i in range(n):
        family = families[i % len(families)]
        for _ in range(1000):
            problem = family(rng)
            key = json.dumps({k: v for k, v in problem.items() if k != "answer"}, sort_keys=True)
            if key not in seen:
                break
        seen.add(key)
        out.append({**problem, "family": family.__name__})
    rng.shuffle(out)
    return out


def write(directory: Path = HERE) -> list[Path]:
    written = []
    for name, families in (("math", MATH_FAMILIES), ("table", TABLE_FAMILIES)):
        everything = problems(families, SEEDS[name], sum(SIZES.values()))
        start = 0
        for split, size in SIZES.items():
            path = directory / f"{name}_{split}.jsonl"
            with path.open("w", encoding="utf-8", newline="\n") as f:
                for problem in everything[start : start + size]:
                    f.write(json.dumps(problem, sort_keys=True) + "\n")
            start += size
            written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
