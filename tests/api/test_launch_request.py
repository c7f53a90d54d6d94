"""POST /api/runs bodies, in either spelling, become the same LaunchParams."""

from __future__ import annotations

import msgspec

from api.http.schemas import LaunchRequest
from flows.launch import LaunchParams


def test_both_spellings_of_a_launch_body_are_one_value() -> None:
    design = {"flow": "ask", "question": "Is it fast?", "inputs": {"repo": "x"}, "band": "medium", "fast": True}
    seed_002 = {"flow_name": "ask", "input": {"question": "Is it fast?", "repo": "x"}, "band": "medium", "fast": True}
    values = [msgspec.json.decode(msgspec.json.encode(body), type=LaunchRequest).params(
        launched_by="ana", idempotency_key="k1") for body in (design, seed_002)]
    assert values[0] == values[1] == LaunchParams("ask", "Is it fast?", band="medium", inputs={"repo": "x"}, fast=True,
                                                  launched_by="ana", idempotency_key="k1")
