"""``rls3 sim sheet``: a real contact sheet PNG of annotated scenes."""

import cv2
import numpy as np

from rls3_ros.sim.contact_sheet import cli_sim_sheet


def test_contact_sheet_writes_an_annotated_grid(tmp_path):
    out = tmp_path / "sheet.png"
    assert cli_sim_sheet(["--out", str(out), "--n", "4", "--size", "96", "--seed", "3"]) == 0
    img = cv2.imread(str(out))
    assert img.shape == (2 * 96 + 2, 2 * 96 + 2, 3)
    # labels and boxes are drawn in saturated box colours that plain scenes rarely contain
    rgb = img[..., ::-1].astype(int)
    red_box = (rgb[..., 0] == 255) & (rgb[..., 1] == 60) & (rgb[..., 2] == 60)
    assert red_box.sum() > 20
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 500  # real renders, not blank tiles
