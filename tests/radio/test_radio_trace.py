"""Trace CSV parsing (interfaces §4) and the ``pushsim energy`` JSON object."""
from __future__ import annotations

import json

import pytest

from simulator.radio import (
    TraceError,
    TracePacket,
    UnknownModelError,
    energy_command,
    get_model,
    iter_trace,
    list_models,
    read_trace,
)


def write(tmp_path, text: str, name: str = "trace.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def parse(text: str) -> list[TracePacket]:
    return list(iter_trace(text.splitlines(keepends=True), name="t.csv"))


def test_reads_packets_in_order(tmp_path):
    path = write(tmp_path, "t,dir,bytes\n0,up,2\n0.05,down,2\n12.5,up,1500\n")
    assert read_trace(path) == [
        TracePacket(0.0, "up", 2), TracePacket(0.05, "down", 2), TracePacket(12.5, "up", 1500),
    ]


def test_lenient_layout():
    text = (
        "\ufeff# captured on a Pixel\n"
        "\n"
        "bytes, dir ,T,note\n"  # any column order, spaces, case, extra columns
        "2, UP , 1e2,ping\n"
        "\n"
        "# a comment between rows\n"
        "3,down,100,\"pong, quoted\"\n"
        "0,up,100.0,ack at the same instant\n"
    )
    packets = list(iter_trace(text.lstrip("\ufeff").splitlines(keepends=True)))
    assert packets == [
        TracePacket(100.0, "up", 2), TracePacket(100.0, "down", 3), TracePacket(100.0, "up", 0),
    ]


def test_utf8_bom_is_accepted(tmp_path):
    path = write(tmp_path, "\ufefft,dir,bytes\r\n1,up,2\r\n")
    assert read_trace(path) == [TracePacket(1.0, "up", 2)]


def test_header_only_is_an_empty_trace_worth_zero_joules(tmp_path):
    path = write(tmp_path, "t,dir,bytes\n")
    result = energy_command("lte", path)
    assert result["joules"] == 0.0
    assert result["promotions"] == 0
    assert result["radio_active_s"] == 0.0
    assert result["packets"] == 0


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("", None, "missing header"),
        ("# only a comment\n", None, "missing header"),
        ("0,up,2\n1,up,2\n", 1, "missing header"),
        ("time,direction,size\n", 1, "missing header"),
        ("t,dir,bytes,t\n", 1, "twice"),
        ("t,dir,bytes\n0,up,2\n1,up\n", 3, "expected the fields"),
        ("t,dir,bytes\nabc,up,2\n", 2, "t must be a finite number"),
        ("t,dir,bytes\nnan,up,2\n", 2, "t must be a finite number"),
        ("t,dir,bytes\ninf,up,2\n", 2, "t must be a finite number"),
        ("t,dir,bytes\n,up,2\n", 2, "t must be a finite number"),
        ("t,dir,bytes\n0,up,2\n5,down,2\n4.5,up,2\n", 4, "earlier than t=5.0 on line 3"),
        ("t,dir,bytes\n0,sideways,2\n", 2, "dir must be 'up' or 'down'"),
        ("t,dir,bytes\n0,up,-3\n", 2, "bytes must be a whole number >= 0, got '-3'"),
        ("t,dir,bytes\n0,up,2.5\n", 2, "bytes must be a whole number"),
        ("t,dir,bytes\n0,up,1_000\n", 2, "bytes must be a whole number"),
        ("t,dir,bytes\n0,up,\n", 2, "bytes must be a whole number"),
        ("t,dir,bytes\n\n\n0,up,2\n0,up,x\n", 5, "bytes"),
    ],
)
def test_bad_rows_name_the_line(text, line, fragment):
    with pytest.raises(TraceError) as info:
        parse(text)
    message = str(info.value)
    assert fragment in message
    assert message.startswith(f"t.csv:{line}: " if line else "t.csv: ")
    assert "\n" not in message


def test_file_errors_are_trace_errors(tmp_path):
    with pytest.raises(TraceError, match="cannot read trace .*missing.csv"):
        read_trace(tmp_path / "missing.csv")
    with pytest.raises(TraceError, match="cannot read trace"):
        read_trace(tmp_path)  # a directory
    latin1 = write(tmp_path, "t,dir,bytes\n# caf\xe9\n0,up,2\n", encoding="latin-1")
    with pytest.raises(TraceError, match="not a UTF-8 text file"):
        read_trace(latin1)


def test_errors_are_value_errors():
    assert issubclass(TraceError, ValueError)
    assert issubclass(UnknownModelError, ValueError)


def test_energy_command_on_a_heartbeat_trace(tmp_path):
    path = write(
        tmp_path,
        "t,dir,bytes\n"
        "0.0,up,2\n0.0,down,2\n"  # heartbeat: isolated
        "100.0,up,2\n100.0,down,2\n"  # heartbeat: isolated
        "103.0,down,300\n",  # a push inside the second beat's tail
    )
    result = energy_command("lte", path)
    json.dumps(result)  # JSON-serialisable as is
    model = get_model("lte-huang2012")
    assert result["model"] == "lte-huang2012"  # canonical name, not the alias
    assert result["promotions"] == 2
    assert result["packets"] == 5
    assert (result["bytes_up"], result["bytes_down"]) == (4, 304)
    breakdown = result["breakdown"]
    assert breakdown["promotion_j"] == pytest.approx(2 * model.promotion.energy_j, abs=1e-6)
    assert result["joules"] == pytest.approx(sum(breakdown.values()), abs=3e-6)
    expected_tail = model.tail_j + 1.0755 * (103.0 - 100.2601) + model.tail_j
    assert breakdown["tail_j"] == pytest.approx(expected_tail, abs=1e-4)
    assert 0 < breakdown["transfer_j"] < 1e-3
    assert result["radio_active_s"] == pytest.approx(
        2 * 0.2601 + 11.576 + (103.0 - 100.2601) + 11.576, abs=1e-3
    )
    assert result["idle_baseline_w"] == pytest.approx(0.020054, abs=1e-6)
    assert result["first_packet_t"] == 0.0
    assert result["radio_idle_at"] == pytest.approx(103.0 + 11.576, abs=1e-3)
    assert set(result) >= {"model", "joules", "promotions", "radio_active_s"}


def test_energy_command_checks_the_model_before_the_file(tmp_path):
    with pytest.raises(UnknownModelError, match="known models"):
        energy_command("umts", tmp_path / "does-not-matter.csv")


def test_energy_command_accepts_every_model_name(tmp_path):
    path = write(tmp_path, "t,dir,bytes\n5,up,2\n")
    names = [name for name, _ in list_models()] + ["lte", "3g", "wifi"]
    for name in names:
        result = energy_command(name, path)
        assert result["model"] == get_model(name).name
        assert result["joules"] == pytest.approx(get_model(name).isolated_energy(2), abs=1e-6)


def test_list_models_describes_each_model():
    rows = list_models()
    assert len(rows) == 8
    for name, description in rows:
        assert name and description and "E1 =" in description
