"""Runs last (file order): the suite leaves no litecoder container or dangling image behind
(in the projects of this pytest process)."""

from __future__ import annotations

import pytest

from tests.conftest import docker_ok, litecoder_leftovers


@pytest.mark.docker
@pytest.mark.leftovers
def test_no_leftovers_after_the_suite() -> None:
    if not docker_ok():
        pytest.skip("no Docker engine")
    assert litecoder_leftovers() == {"containers": [], "dangling_images": []}
