"""The host that measured a benchmark: bench.host, in the results files and the README table."""

import json
import platform
from importlib import metadata

from bench import host, make_table, results_io

# /proc/cpuinfo of a Neoverse-N1 (aarch64): no "model name", the ISA is in "Features".
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
Features\t: fp
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def _cpuinfo_field(name):
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    return None


def test_facts_of_this_machine():
    facts = host.facts()
    assert set(facts) == {"cpu_model", "isa", "cpus", "arch", "litert", "tensorflow"}
    assert facts["cpu_model"] == (_cpuinfo_field("model name") or platform.processor())
    flags = (_cpuinfo_field("flags") or _cpuinfo_field("Features") or "").split()
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma", "f16c", "asimddp"):
        assert (flag in facts["isa"]) == (flag in flags), flag
    assert facts["isa"] == [f for f in host.ISA_FLAGS if f in flags]
    assert facts["litert"] == metadata.version("ai-edge-litert")
    assert facts["tensorflow"] == metadata.version("tensorflow")
    assert facts["cpus"] >= 1 and facts["arch"] == platform.machine()


def test_facts_of_an_aarch64_cpuinfo():
    facts = host.facts(ARM_CPUINFO)
    # The first core's Features line, and the implementer / part ids as the model.
    assert facts["isa"] == ["asimd", "asimdhp", "asimddp"]
    assert facts["cpu_model"] == "CPU implementer 0x41, part 0xd0c"
    assert host.parse_cpuinfo(ARM_CPUINFO.replace("asimddp", "asimddp i8mm"))[1][-1] == "i8mm"


def test_without_cpuinfo_the_model_falls_back_to_platform():
    facts = host.facts("")
    assert facts["isa"] == []
    assert facts["cpu_model"] == (platform.processor() or platform.machine() or None)


def test_results_file_and_new_records_name_the_host_old_records_stay(tmp_path):
    old = results_io.make_record(model="m", method="float", setting="old", acc=0.9)
    (tmp_path / "b.json").write_text(json.dumps({"benchmark": "b", "records": [old]}))
    new = results_io.make_record(model="m", method="float", setting="new", acc=0.91)
    named = results_io.make_record(model="m", method="x", setting="y", host={"cpu_model": "Z"})
    path = results_io.write_results("b", [new, named], folder=str(tmp_path))
    with open(path) as f:
        doc = json.load(f)
    here = host.facts()
    assert {k: doc["machine"][k] for k in here} == here
    assert doc["machine"]["system"] == platform.system()
    kept, fresh, given = doc["records"]
    assert kept == old  # untouched: no host invented for a row of an older run
    assert fresh["host"] == here and fresh["setting"] == "new"
    assert given["host"] == {"cpu_model": "Z"}


def test_table_says_which_host_produced_which_rows(tmp_path):
    a = {"cpu_model": "AMD EPYC", "isa": ["avx2", "avx512_vnni"], "cpus": 2, "litert": "2.3.0"}
    recs = [
        results_io.make_record(model="m", method="float", setting="s1", acc=0.9, host=a),
        results_io.make_record(model="m", method="int8", setting="s1", acc=0.9, host=a),
    ]
    results_io.write_results("one", recs, folder=str(tmp_path))
    table = make_table.render(str(tmp_path))
    line = "*measured on: AMD EPYC (avx2, avx512_vnni), 2 CPUs, LiteRT 2.3.0*"
    assert table.splitlines()[2] == line
    assert "| host |" not in table

    old = results_io.make_record(model="m", method="float", setting="s0", acc=0.8)
    (tmp_path / "mixed.json").write_text(json.dumps({"benchmark": "mixed", "records": [old]}))
    results_io.write_results("mixed", recs[:1], folder=str(tmp_path))
    table = make_table.render(str(tmp_path))
    mixed = table.split("**mixed**")[1].split("**one**")[0]
    assert "*measured on (column host): unknown = host unknown" in mixed
    assert "H1 = AMD EPYC (avx2, avx512_vnni), 2 CPUs, LiteRT 2.3.0*" in mixed
    assert "| model | method | setting | host |" in mixed
    assert "| m | float | s0 | unknown |" in mixed and "| m | float | s1 | H1 |" in mixed
