"""huggingface_hub's own tests against devhub: the fast subset (`make fidelity` runs them all).

The suite comes from the pinned release's sdist on PyPI at run time (`devhub.fidelity.source`);
when it cannot be had this test errors: the measure must not silently go missing.
"""

import pytest

from devhub.fidelity.runner import MODES, format_table, run
from devhub.fidelity.selection import FAST


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fast_subset_passes_in_both_transfer_modes() -> None:
    results = run(FAST, MODES)
    table = format_table(results)
    assert [r.mode for r in results] == list(MODES)
    for result in results:
        assert result.failures == [], f"{result.mode}:\n{table}\n" + "\n".join(
            f"{o.nodeid}: {o.detail}" for o in result.failures
        )
        passed = sum(row["passed"] for row in result.by_file().values())
        # Nothing of the subset is out of scope or skipped in either mode: all of it must run.
        assert passed == len(result.outcomes), f"{result.mode}:\n{table}"
