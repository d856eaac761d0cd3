"""``--shard auto``: the shard of a pod of a Kubernetes Indexed Job, from its environment.

An Indexed Job (``completionMode: Indexed``) gives each pod ``JOB_COMPLETION_INDEX``
(0, 1, ..., completions - 1). Kubernetes does not tell a pod how many completions there
are, so the manifest sets ``JOB_COMPLETIONS`` to the Job's ``completions``
(``deploy/sweep-job.yaml`` does). Pod k then runs shard k+1 of n (``--shard`` counts from 1).
"""

from __future__ import annotations

import os

from tftransfer.errors import UserError

INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
COUNT_VARIABLE = "JOB_COMPLETIONS"


def auto_shard(environ=None) -> str:
    """``"i/n"`` for this pod: i = ``JOB_COMPLETION_INDEX`` + 1, n = ``JOB_COMPLETIONS``.

    Raises:
      UserError: a variable missing or not a whole number, or the index not below n.
    """
    environ = os.environ if environ is None else environ
    index = _whole_number(environ, INDEX_VARIABLE, minimum=0)
    count = _whole_number(environ, COUNT_VARIABLE, minimum=1)
    if index >= count:
        raise UserError(f"--shard auto: {INDEX_VARIABLE}={index} is not below "
                        f"{COUNT_VARIABLE}={count}; set {COUNT_VARIABLE} to the Job's "
                        f"completions.")
    return f"{index + 1}/{count}"


def _whole_number(environ, name: str, minimum: int) -> int:
    value = environ.get(name)
    if value is None:
        raise UserError(f"--shard auto reads {INDEX_VARIABLE} and {COUNT_VARIABLE} (a pod of "
                        f"a Kubernetes Indexed Job, see docs/scale-out.md), but {name} is not "
                        f"set; give --shard i/n instead.")
    if not value.strip().isdigit() or int(value) < minimum:
        raise UserError(f"--shard auto: {name}={value!r} is not a whole number of at least "
                        f"{minimum}.")
    return int(value)
