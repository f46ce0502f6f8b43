"""The CLI's argument handling value by value: defaults that reach the code, limits that are
inclusive where the help says so, inputs expanded in a stable order, grid file names."""

import os
from argparse import Namespace
from pathlib import Path
from unittest import mock

import pytest

from captioner import cli
from captioner.decoding import BATCH_SIZE


def test_caption_defaults():
    args = cli.build_parser().parse_args(["caption", "x.png"])
    assert (args.images, args.weights, args.revision, args.device) == ([Path("x.png")], None,
                                                                       None, "auto")
    # --max-len None: the model's own world decides once it is open (see below)
    assert (args.max_len, args.batch_size, args.quantize, args.beam_size) == (None, BATCH_SIZE,
                                                                              None, 3)
    assert (args.json, args.output, args.attention_grid, args.top_k) == (False, None, None, 0)
    assert (args.prefix, args.look_here) == ("", [])


def test_evaluate_defaults():
    args = cli.build_parser().parse_args(["evaluate"])
    # --dataset None: the scene world the model was trained on
    assert (args.dataset, args.num_scenes, args.seed, args.data_dir) == (None, 1000, 2026,
                                                                         Path("data"))
    assert args.beam_size == [1, 3] and args.output is None
    assert (args.image_column, args.caption_column, args.split_column) == (None, None, None)
    args = cli.build_parser().parse_args(["evaluate", "--beam-size", "2", "5",
                                          "--caption-column", "text", "--seed", "7",
                                          "--num-scenes", "30"])
    assert args.beam_size == [2, 5] and args.caption_column == "text"
    assert (args.seed, args.num_scenes) == (7, 30)  # numbers, not strings


def test_look_here_is_repeatable_and_kept_in_order():
    args = cli.build_parser().parse_args(["caption", "x.png", "--look-here", "4:0.1,0.9",
                                          "--look-here", "2:1,0"])
    assert args.look_here == [(3, 0.1, 0.9), (1, 1.0, 0.0)]


@pytest.mark.parametrize("beam, length, batch, ok", [
    (["1"], "1", "1", True), (["1", "3"], "20", "8", True), (["0"], "5", "5", False),
    (["2", "0"], "5", "5", False), (["1"], "0", "5", False), (["1"], "5", "0", False)])
def test_decoding_limits_start_at_one(beam, length, batch, ok, capsys):
    """--beam-size, --max-len and --batch-size accept 1 and refuse 0, each on its own."""
    argv = ["evaluate", "--beam-size", *beam, "--max-len", length, "--batch-size", batch]
    if ok:
        args = cli.build_parser().parse_args(argv)
        assert (args.beam_size, args.max_len, args.batch_size) == (
            [int(b) for b in beam], int(length), int(batch))
        return
    with pytest.raises(SystemExit) as stop:
        cli.build_parser().parse_args(argv)
    assert stop.value.code == 2 and "must be at least 1, got 0" in capsys.readouterr().err


def test_max_len_default_is_the_models_world(monkeypatch):
    """Without --max-len, a scenes-v1 model decodes up to 20 words and a scenes-v2 one up to
    that world's longest caption; a photo model keeps 20; a given --max-len wins."""
    from captioner.scenes import get_world

    worlds = {"scenes-v1": get_world("scenes-v1"), "scenes-v2": get_world("scenes-v2")}
    for world, given, expected in (("scenes-v1", None, 20), ("scenes-v2", None,
                                   worlds["scenes-v2"].max_words), (None, None, 20),
                                   ("scenes-v2", 7, 7)):
        monkeypatch.setattr(cli, "load_model", lambda *a, **k: object())
        monkeypatch.setattr("captioner.scenes.world_of",
                            lambda model, w=world: worlds.get(w))
        args = Namespace(weights=None, device="cpu", revision=None, quantize=None, max_len=given)
        model, error = cli.open_model(args)
        assert error is None and args.max_len == expected, (world, given)


def test_inputs_expand_folders_recursively_sorted_and_once(tmp_path):
    album = tmp_path / "album"
    (album / "b").mkdir(parents=True)
    (album / "a.JPG").write_bytes(b"x")
    (album / "b" / "c.webp").write_bytes(b"x")
    (album / "b" / "notes.txt").write_text("x")
    (album / "b" / "dir.png").mkdir()  # a folder named like an image is not one
    empty = tmp_path / "empty"
    empty.mkdir()
    single = tmp_path / "z.gif"
    found, errors = cli.expand_inputs([single, album, empty, album / "a.JPG", single])
    assert found == [single, album / "a.JPG", album / "b" / "c.webp"]
    kinds = ", ".join(sorted(cli.IMAGE_SUFFIXES))
    assert errors == [f"{empty}: a folder with no images ({kinds})"]


def test_grid_names_one_input_many_inputs_and_repeated_names(tmp_path):
    out = tmp_path / "grids" / "g.png"
    one = tmp_path / "photo.jpg"
    assert cli.grid_names(out, [one]) == {one: out}
    a, b = tmp_path / "x" / "cat.png", tmp_path / "y" / "dog.jpg"
    assert cli.grid_names(out, [a, b]) == {a: out.with_name("g-cat.png"),
                                           b: out.with_name("g-dog.png")}
    same = [tmp_path / "x" / "cat.png", tmp_path / "y" / "z" / "cat.png"]
    assert cli.grid_names(tmp_path / "g", same) == {
        same[0]: tmp_path / "g-x-cat-png.png", same[1]: tmp_path / "g-y-z-cat-png.png"}


def test_main_runs_the_command_asked_for(monkeypatch):
    called = []
    monkeypatch.setattr(cli, "caption_command", lambda args: called.append("caption") or 5)
    monkeypatch.setattr(cli, "evaluate_command", lambda args: called.append("evaluate") or 6)
    assert cli.main(["caption", "x.png"]) == 5 and cli.main(["evaluate"]) == 6
    assert called == ["caption", "evaluate"]
    with pytest.raises(SystemExit) as stop:
        cli.main([])
    assert stop.value.code == 2


def test_help_names_what_each_value_is(capsys):
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    commands.choices["caption"].print_help()
    usage = " ".join(capsys.readouterr().out.split())
    for shown in ("--weights DIR_OR_REPO_ID", "--output FILE.jsonl|FILE.csv", "--top-k K",
                  '--prefix "WORDS"', "--look-here WORD:X,Y", "--attention-grid OUT.png",
                  "IMAGE_OR_DIR [IMAGE_OR_DIR ...]", "--revision REVISION"):
        assert shown in usage, shown


HELP_FILE = Path(__file__).parent / "data" / "cli-help.txt"


def help_texts() -> str:
    """`--help` of the CLI and of each command, at a fixed width."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    with mock.patch.dict(os.environ, {"COLUMNS": "100"}):
        pages = [parser.format_help()] + [commands.choices[name].format_help()
                                          for name in ("caption", "evaluate", "push",
                                                       "average", "ensemble", "deploy-space")]
    return "\n".join(pages)


def test_help_is_the_reviewed_text():
    """Every option's help, metavar, choices and default as a user reads them. After changing
    the help on purpose, review the new text, then write it with
    `PYTHONPATH=. python tests/test_meaning_cli.py`."""
    assert help_texts() == HELP_FILE.read_text()


if __name__ == "__main__":
    HELP_FILE.parent.mkdir(exist_ok=True)
    HELP_FILE.write_text(help_texts())


def test_evaluate_defaults_and_the_smallest_values_each_option_takes():
    parser = cli.build_parser()
    default = parser.parse_args(["evaluate"])
    assert (default.faithfulness, default.faithfulness_scenes, default.curve_words,
            default.num_scenes, default.seed) == (True, 250, 200, 1000, 2026)
    smallest = parser.parse_args(["evaluate", "--num-scenes", "1", "--seed", "0",
                                  "--faithfulness-scenes", "0", "--curve-words", "0",
                                  "--no-faithfulness"])
    assert (smallest.num_scenes, smallest.seed, smallest.faithfulness_scenes,
            smallest.curve_words, smallest.faithfulness) == (1, 0, 0, 0, False)
    assert parser.parse_args(["caption", "x.png", "--top-k", "0"]).top_k == 0


def test_the_push_command_runs_push_with_the_folder_as_a_path(monkeypatch, tmp_path):
    args = cli.build_parser().parse_args(["push", "runs/scenes", "someone/captioner"])
    assert args.model_dir == Path("runs/scenes") and isinstance(args.model_dir, Path)
    ran = []
    monkeypatch.setattr(cli, "push_command", lambda args: ran.append(args.repo_id) or 0)
    assert cli.main(["push", str(tmp_path), "someone/captioner"]) == 0
    assert ran == ["someone/captioner"]
