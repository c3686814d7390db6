"""File › Open from Hub…: the dialog composes an hf:// source, the window opens it header-only against the loopback
Hub stand-in, the histogram reads one tensor's byte range, and File › Recent remembers the remote source."""
from __future__ import annotations



from tests.gui.conftest import LOAD_TIMEOUT, select_and_measure
from tests.remote_helpers import MINILM_REPO, minilm_hub

REPO = MINILM_REPO


hub = minilm_hub  # the fixture, under the name the tests use


def test_open_from_hub_dialog_loads_remote_repo_and_remembers_it(hub, qtbot, window, minilm, monkeypatch):
    from explorer.gui.hub_dialog import OpenFromHubDialog, hub_source_text

    assert hub_source_text(REPO, "main", "") == f"hf://{REPO}"
    assert hub_source_text(REPO, "v2", "sub/") == f"hf://{REPO}@v2/sub"
    dlg = OpenFromHubDialog(window, repos=[REPO])
    assert "none" in dlg.token_label.text()  # no token in this environment
    dlg.repo.setText("not a repo")
    dlg.accept()
    assert dlg.source is None and dlg.error.text()
    dlg.repo.setText(REPO)
    dlg.accept()
    assert dlg.source == f"hf://{REPO}"
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETSECRET")
    shown = OpenFromHubDialog(window, repos=[]).token_label.text()
    assert "HF_TOKEN" in shown and "SECRET" not in shown

    said: list[str] = []
    window.session.loadStatus.connect(said.append)
    with qtbot.waitSignal(window.session.loaded, timeout=LOAD_TIMEOUT):
        window.open_path(dlg.source, as_checkpoint=True)
    assert said[-1].startswith("fetching headers: 1/1 file(s), ") and "KiB transferred" in said[-1]
    rep = window.session.report
    assert rep.index.path == f"hf://{REPO}/model.safetensors" and rep.counts()["missing"] == 0
    assert window.recent.paths()[0] == f"hf://{REPO}"
    hub.reset_counts()
    name = "encoder.layer.0.attention.self.query.weight"
    select_and_measure(qtbot, window, name)
    assert hub.bytes_served == rep.index.tensors[name].nbytes
