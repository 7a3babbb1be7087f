"""An ordinary Inspect task, not one of safelab's: the provider must run any task."""

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import generate


@task
def arithmetic() -> Task:
    return Task(
        dataset=[
            Sample(input=f"What is {a} plus {b}? Answer with the number only.", target=str(a + b))
            for a, b in [(2, 3), (4, 4), (1, 6), (5, 2)]
        ],
        solver=generate(),
        scorer=includes(),
    )
