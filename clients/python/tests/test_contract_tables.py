"""The package against the contract's own text (schemas/README.md), no stack needed:
every error code has its exception class (named after it) and nothing else does; the job
types, routing keys and default timeouts are the README's."""

import os
import re

import pytest

import duo_workers
from duo_workers import errors

from conftest import source_dir


def readme() -> str:
    with open(os.path.join(source_dir(), "schemas", "README.md"), encoding="utf-8") as fh:
        return fh.read()


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = re.search(r"^#{2,3} ", text[start + len(heading):], re.M)
    return text[start:start + len(heading) + nxt.start()] if nxt else text[start:]


def rows(text: str):
    out = []
    for line in text.splitlines():
        if re.match(r"^\|[-| ]+\|$", line):
            continue
        if line.startswith("|"):
            out.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif out:
            break
    return out[1:]


def ticked(cell: str):
    return re.findall(r"`([^`]+)`", cell)


def contract_codes():
    codes = []
    for row in rows(section(readme(), "### Error codes")):
        codes += [c for c in ticked(row[0]) if re.fullmatch(r"[a-z_]+", c)]
    return codes


def camel(code: str) -> str:
    return "".join(p.capitalize() for p in code.split("_")) + "Error"


def test_every_contract_code_has_its_class():
    codes = contract_codes()
    assert len(codes) >= 40
    assert sorted(duo_workers.ERRORS) == sorted(codes)
    for code in codes:
        cls = duo_workers.error_class(code)
        assert cls.__name__ == camel(code) and cls.code == code
        assert getattr(errors, camel(code)) is cls and getattr(duo_workers, camel(code)) is cls
        assert issubclass(cls, (errors.TransientJobError, errors.PermanentJobError))


@pytest.mark.parametrize("code", contract_codes())
def test_error_reply_raises_its_class(code):
    reply = {"job_id": "j1", "job_type": "auth", "status": "error",
             "error": {"code": code, "message": "m", "duo_code": 40301,
                       "run_id": "3f7c2a52-8a84-4c4e-9a55-4fbd8d3d2f3e"}}
    exc = errors.from_reply(reply)
    assert type(exc) is duo_workers.error_class(code)
    assert (exc.code, exc.message, exc.duo_code, exc.job_id) == (code, "m", 40301, "j1")
    assert exc.run_id == "3f7c2a52-8a84-4c4e-9a55-4fbd8d3d2f3e"
    assert isinstance(exc, duo_workers.DuoWorkersError)


def test_transient_split_follows_what_to_do():
    """Transient: the README says to try again (later, or with a new job); everything else
    is for someone to fix first."""
    for row in rows(section(readme(), "### Error codes")):
        todo = row[2].lower()
        retry = "try again" in todo or "re-send" in todo or "send a new job" in todo \
            or "follow that run" in todo
        for code in ticked(row[0]):
            if re.fullmatch(r"[a-z_]+", code):
                assert duo_workers.error_class(code).transient == retry, code


def test_refusals_carry_reason_and_retry_after():
    exc = errors.from_reply({"job_id": "j", "status": "error",
                             "error": {"code": "duo_unavailable", "message": "not sent",
                                       "reason": "circuit_open", "retry_after_secs": 4}})
    assert type(exc) is duo_workers.DuoUnavailableError and exc.transient
    assert (exc.reason, exc.retry_after_secs) == ("circuit_open", 4)


def test_unknown_code_is_a_plain_job_error():
    exc = errors.from_reply({"job_id": "j", "status": "error",
                             "error": {"code": "brand_new_code", "message": "x"}})
    assert type(exc) is errors.JobError and exc.code == "brand_new_code"


def test_routing_keys_are_the_contracts():
    doc_keys = {}
    for row in rows(section(readme(), "## Jobs")):
        t, k = ticked(row[0]), ticked(row[1])
        if t and k:
            doc_keys[t[0]] = k[0]
    for jtype, key in duo_workers.ROUTING_KEYS.items():
        assert doc_keys[jtype] == key
    assert set(doc_keys) - set(duo_workers.ROUTING_KEYS) == {"import.page"}  # internal


def test_default_timeouts_are_the_contracts():
    found = {}
    for row in rows(section(readme(), "### How long to wait for a reply")):
        secs = re.match(r"(\d+) s\b", row[3])
        assert secs, row
        for jtype in ticked(row[0]):
            found[jtype] = float(secs.group(1))
    assert found == duo_workers.TIMEOUTS
