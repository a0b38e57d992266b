"""``rls3 query`` in direct mode (no ROS): same answers as the model, adapters change them,
bad input gives exit codes and reasons. (The --via-ros path is in test_vlm_nodes.py.)"""

from __future__ import annotations

import json

import pytest
from PIL import Image

import vlm_test_model as tm
from rls3_ros.cli.query import cli_query

MODEL = "py:vlm_test_model:load"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    s = tm.make_samples(8, seed=5)
    png = d / "scene.png"
    Image.fromarray(s[0].image).save(png)
    m = tm.TinySpatialVLM(seed=1)
    m.fine_tune(s, 20)
    return s[0], str(png), m.save_adapter(str(d / "adapter"))


def _json(capsys, argv):
    code = cli_query(argv + ["--json"])
    return code, json.loads(capsys.readouterr().out)


def test_where_direct_matches_the_model_and_adapter_changes_it(scene, capsys):
    sample, png, adapter = scene
    code, out = _json(capsys, ["--image", png, "--subject", "red square", "--reference", "blue square", "--model", MODEL])
    assert code == 0 and out["success"] and out["query_type"] == "where"
    expected = tm.load().where(sample.image, "red square", "blue square")  # PNG is lossless
    assert out["term_probabilities"] == pytest.approx(expected, abs=1e-6)
    assert out["answer"].startswith("The red square is ")
    code, tuned = _json(capsys, ["--image", png, "--subject", "red square", "--reference", "blue square",
                                 "--model", MODEL, "--adapter", adapter])
    assert code == 0 and tuned["adapter"] == adapter
    assert tuned["term_probabilities"] != pytest.approx(expected, abs=1e-4)


def test_check_and_what_and_text_output(scene, capsys):
    _, png, _ = scene
    code = cli_query(["--image", png, "--subject", "red square", "--relation", "left", "--reference", "blue square",
                      "--model", MODEL])
    text = capsys.readouterr().out
    assert code == 0 and "holds: " in text and text.startswith(("Yes, the red square", "No, the red square"))
    code, out = _json(capsys, ["--image", png, "--relation", "above", "--reference", "blue square",
                               "--candidates", "red square", "green square", "--model", MODEL])
    assert code == 0 and out["query_type"] == "what" and len(out["ranked"]) == 2
    code = cli_query(["--image", png, "--subject", "red square", "--reference", "blue square", "--model", MODEL])
    text = capsys.readouterr().out
    assert code == 0 and "term probabilities:" in text and "*" in text


@pytest.mark.parametrize("argv,code,reason", [
    (["--subject", "a", "--reference", "b"], 2, "--image is required"),
    (["--image", "/no/such.png", "--subject", "a", "--reference", "b"], 2, "cannot read image"),
    (["--image", "{png}", "--subject", "", "--reference", "blue square", "--model", MODEL], 1, "subject is empty"),
    (["--image", "{png}", "--subject", "a", "--relation", "sideways", "--reference", "b", "--model", MODEL], 1, "sideways"),
    (["--image", "{png}", "--subject", "a", "--reference", "b", "--model", "py:vlm_test_model:load:/no/dir"], 1,
     "no base model"),
    (["--image", "{png}", "--subject", "a", "--reference", "b", "--model", MODEL, "--adapter", "/no/adapter"], 1,
     "no adapter directory"),
])
def test_bad_input_exit_codes_and_reasons(scene, capsys, argv, code, reason):
    _, png, _ = scene
    assert cli_query([x.replace("{png}", png) for x in argv]) == code
    out = capsys.readouterr()
    assert reason in out.out + out.err
