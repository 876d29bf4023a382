"""workbench.choices: the modes "auto" chose, remembered for the machine and the network."""

import json

from model import MNISTNet
from workbench import choices

TINY = ((4,), (4,), (4,), (4,))
CHOICE = dict(precision="bf16", compiled=False, why="fastest measured", step_ms={"bf16": 5.0},
              failed={}, skipped="")  # fmt: skip


def test_a_choice_is_recalled_for_its_key_only(speed_choices):
    key = choices.key(MNISTNet(TINY), ["fp32", "bf16"], 8)
    assert choices.path() == speed_choices and choices.recall(key) is None
    choices.remember(key, CHOICE)
    recalled = choices.recall(key)
    assert recalled["precision"] == "bf16" and recalled["step_ms"] == {"bf16": 5.0}
    assert recalled["why"].startswith("fastest measured (measured ")
    assert f"remembered in {speed_choices}: delete it to measure again" in recalled["why"]
    for other in (
        choices.key(MNISTNet(TINY), ["fp32", "bf16"], 16),  # another batch size
        choices.key(MNISTNet((4, 4, 4, 8)), ["fp32", "bf16"], 8),  # another network
        choices.key(MNISTNet(TINY), ["fp32"], 8),  # other modes allowed
    ):
        assert other != key and choices.recall(other) is None


def test_choices_are_kept_side_by_side_in_one_file(speed_choices):
    first, second = (choices.key(MNISTNet(TINY), ["fp32", "bf16"], n) for n in (8, 16))
    choices.remember(first, CHOICE)
    choices.remember(second, {**CHOICE, "precision": "fp32"})
    assert set(json.loads(speed_choices.read_text())) == {first, second}
    assert choices.recall(first)["precision"] == "bf16"


def test_a_damaged_file_or_entry_is_no_choice(speed_choices):
    key = choices.key(MNISTNet(TINY), ["fp32", "bf16"], 8)
    for damage in ("{", "[]", json.dumps({key: {"precision": "fp32"}}), json.dumps({key: 3})):
        speed_choices.write_text(damage)
        assert choices.recall(key) is None
    speed_choices.write_text("{")
    assert choices.read() == {}


def test_the_cache_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("S5_SPEED_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert choices.path() == tmp_path / "s5-mnist" / "speed.json"
