"""One description of where a number comes from, shared by every record writer and the book's page."""
import os
import re

from ulvm.report.reproduce import environment
from ulvm.runtime import provenance
from ulvm.version import code_version


def test_provenance_names_the_code_the_machine_the_software_and_the_time():
    record = provenance("cpu", packages=("torch", "no-such-distribution"))
    assert record["code_version"] == code_version()
    assert {"device", "torch", "python", "platform", "cpu", "cpu_cores", "cpu_threads"} <= set(record["machine"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["recorded_at"])
    assert record["packages"]["no-such-distribution"] == "not installed"
    assert "packages" not in provenance("cpu")


def test_the_reproducibility_page_describes_the_machine_from_provenance():
    machine, env = provenance("cpu")["machine"], environment()
    assert (env["python"], env["platform"], env["cpu"]) == (machine["python"], machine["platform"], machine["cpu"])
    assert env["cpu_count"] == os.cpu_count() and "torch" in env["packages"]
