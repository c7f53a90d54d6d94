"""An independent reading of docs/TRIGGER_RULES.md's prose: the oracle the rule tests
and the property tests both check flows/rules.py against.

Deps are classed as "success", "failed", "rejected", "skipped" or "not_done".
"""

from __future__ import annotations


def by_the_prose(rule: str, deps: list[str]) -> tuple[str, str]:
    """Verdict and reason written straight from the rule descriptions in the doc."""
    if not deps or rule == "always":
        return "run", ""
    n = len(deps)
    ok, not_done = deps.count("success"), deps.count("not_done")
    failures = [d for d in deps if d in ("failed", "rejected")]
    skipped = deps.count("skipped")
    done = not_done == 0
    fail_reason = "rejected" if failures and all(d == "rejected" for d in failures) else "upstream_failed"
    # a skip for failures is only given once its reason is certain (the doc's "skip (reason)")
    if rule in ("all_success", "none_failed", "none_failed_min_one_success") and failures and not done:
        if fail_reason == "rejected":
            return "wait", ""
    if rule == "all_success":
        if failures:
            return "skip", fail_reason
        if skipped and done:
            return "skip", "upstream_skipped"
        return ("run", "") if ok == n else ("wait", "")
    if rule == "one_success":
        if ok:
            return "run", ""
        if not done:
            return "wait", ""
        return "skip", fail_reason if failures else "upstream_skipped"
    if rule == "all_done":
        return ("run", "") if done else ("wait", "")
    if rule == "none_failed":
        if failures:
            return "skip", fail_reason
        return ("run", "") if done else ("wait", "")
    if rule == "none_failed_min_one_success":
        if failures:
            return "skip", fail_reason
        if not done:
            return "wait", ""
        return ("run", "") if ok else ("skip", "upstream_skipped")
    if rule == "all_failed":
        if ok or skipped:
            return "skip", "trigger_rule"
        return ("run", "") if len(failures) == n else ("wait", "")
    if rule == "one_failed":
        if failures:
            return "run", ""
        return ("skip", "trigger_rule") if done else ("wait", "")
    raise AssertionError(rule)
