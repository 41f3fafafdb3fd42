"""`pushsim energy` / `pushsim models` as a user runs them (interfaces §1, §4)."""
import json
import subprocess
import sys


def pushsim(*args):
    return subprocess.run([sys.executable, "-m", "simulator", *args],
                          capture_output=True, text=True, timeout=60)


def test_energy_of_one_isolated_beat_matches_huang(tmp_path):
    trace = tmp_path / "beat.csv"
    trace.write_text("t,dir,bytes\n100.0,up,2\n100.05,down,2\n")
    done = pushsim("energy", "--model", "lte", "--trace", str(trace))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == "lte-huang2012"
    assert result["promotions"] == 1
    assert abs(result["joules"] - 12.76) < 0.07  # one isolated small transfer, Huang 2012
    assert {"model", "joules", "promotions", "radio_active_s"} <= result.keys()


def test_energy_bad_input_is_one_line_error(tmp_path):
    trace = tmp_path / "bad.csv"
    trace.write_text("t,dir,bytes\n1,up,2\n0.5,down,2\n")
    done = pushsim("energy", "--model", "lte", "--trace", str(trace))
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1
    assert "bad.csv:3" in done.stderr
    unknown = pushsim("energy", "--model", "5g-magic", "--trace", str(trace))
    assert unknown.returncode != 0 and "known models" in unknown.stderr
    assert "Traceback" not in unknown.stderr + done.stderr


def test_models_lists_every_contract_name():
    done = pushsim("models")
    assert done.returncode == 0
    names = {line.split()[0] for line in done.stdout.splitlines()}
    assert {"lte-huang2012", "lte-aro", "3g-huang2012", "3g-aro", "wifi-huang2012",
            "wifi-aro"} <= names
