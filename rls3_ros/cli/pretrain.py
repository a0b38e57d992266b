"""``rls3 pretrain``: build a base VLM — the grounded model (default) or the embedded fusion model.

Only the choice between the two pretrainers lives here, so neither imports the other's CLI
(``rls3_ros.vlm.grounded_pretrain`` reuses ``rls3_ros.vlm.pretrain``'s corpus renderer).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from rls3_ros.vlm.grounded_pretrain import cli_grounded_pretrain
from rls3_ros.vlm.pretrain import cli_pretrain_embedded


def cli_pretrain(argv: Optional[List[str]] = None) -> int:
    """``rls3 pretrain [--model grounded|embedded] [--force] ...``: build and cache a base VLM.

    ``--model grounded`` (default, the default VLM) runs ``rls3_ros.vlm.grounded_pretrain``;
    ``--model embedded`` the fusion model below. Other options go to the chosen pretrainer.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    sel = argparse.ArgumentParser(add_help=False)
    sel.add_argument("--model", default="grounded", choices=["grounded", "embedded"])
    which, rest = sel.parse_known_args(argv)
    if which.model == "grounded":
        if "-h" in rest or "--help" in rest:
            print("rls3 pretrain [--model grounded|embedded] ...  (default grounded; options below)\n")
        return cli_grounded_pretrain(rest)
    return cli_pretrain_embedded(rest)


if __name__ == "__main__":
    sys.exit(cli_pretrain(sys.argv[1:]))
