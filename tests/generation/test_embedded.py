"""Materialising the embedded SmolLM2 (generation/embedded.py)."""

import pytest

from generation import embedded


@pytest.mark.slow
def test_materialising_while_another_process_finishes_first_keeps_theirs(tmp_path, monkeypatch):
    target = tmp_path / "smollm2"
    checked = []

    def racing(path):
        if not checked:  # this process finds nothing; another renames its copy in while this one converts
            checked.append(path)
            target.mkdir()
            (target / "config.json").write_text("{}")
            (target / "model.safetensors").write_text("theirs")
            return False
        return (path / "config.json").is_file() and (path / "model.safetensors").is_file()

    monkeypatch.setattr(embedded, "embedded_is_materialised", racing)
    assert embedded.embedded_materialise(target) == target
    assert (target / "model.safetensors").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2"]  # our temporary copy is gone
