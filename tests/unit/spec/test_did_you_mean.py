"""An unknown key, kind or enum value names the closest known one, at its JSON pointer."""

from __future__ import annotations

import pytest

from pyro.errors import SpecError
from pyro.spec import load_spec_text
from pyro.spec.issues import did_you_mean

SPEC = """\
apiVersion: pyro/v1
kind: Run
metadata: {name: typos}
spec:
  environment: debian:12
  timeoutSecs: 5
  backend: qemu_tcg
  resources: {memorymib: 512, x: 1}
  steps:
    - {name: a, run: "true", continueOnErorr: true}
"""


def rendered(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, name="t.yaml")
    return [issue.render() for issue in caught.value.issues]


def test_unknown_keys_and_values_name_the_closest_known_one() -> None:
    run_keys = "environment, backend, resources, timeoutSeconds, network, env, files, steps, "
    more = "artifacts, cleanup, matrix, retries"
    step_keys = "name, run, argv, cwd, env, timeoutSeconds, continueOnError"
    assert rendered(SPEC) == [
        "t.yaml:6:3: /spec/timeoutSecs: unknown key 'timeoutSecs'; did you mean "
        f"'timeoutSeconds'? (expected one of the keys {run_keys}{more})",
        "t.yaml:7:3: /spec/backend: value not allowed; did you mean 'qemu-tcg'? "
        "(expected one of auto, firecracker, qemu-kvm, qemu-tcg; found 'qemu_tcg')",
        "t.yaml:8:15: /spec/resources/memorymib: unknown key 'memorymib'; did you mean "
        "'memoryMiB'? (expected one of the keys vcpus, memoryMiB)",
        # Nothing is close to "x": no guess, only the list.
        "t.yaml:8:31: /spec/resources/x: unknown key 'x' (expected one of the keys vcpus, "
        "memoryMiB)",
        "t.yaml:10:30: /spec/steps/0/continueOnErorr: unknown key 'continueOnErorr'; did you "
        f"mean 'continueOnError'? (expected one of the keys {step_keys})",
    ]


def test_unknown_kind_names_the_closest_kind() -> None:
    assert rendered("apiVersion: pyro/v1\nkind: environment\n") == [
        "t.yaml:2:1: /kind: unknown kind; did you mean 'Environment'? "
        "(expected one of Run, Environment; found 'environment')"
    ]


@pytest.mark.parametrize(
    ("word", "suggestion"),
    [
        ("timeout", "; did you mean 'timeoutSeconds'?"),
        ("TIMEOUTSECONDS", "; did you mean 'timeoutSeconds'?"),
        ("timeoutSeconds", ""),  # the word itself is no suggestion
        ("zzz", ""),
        (3, ""),  # only strings are compared
    ],
)
def test_did_you_mean(word: object, suggestion: str) -> None:
    assert did_you_mean(word, ["timeoutSeconds", "steps"]) == suggestion
