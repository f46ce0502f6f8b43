""""Look here" with a point off the diagonal, through the CLI and the app's API: a red circle at
(x, y) = (0.25, 0.75) and a blue square at (0.75, 0.25). Looking at one names its colour; a
swapped x and y would name the other. The CLI's WORD:X,Y parser is checked value by value."""

import argparse
import json

import numpy as np
import pytest

from captioner import cli
from captioner.decoding import point_map
from captioner.demo import Demo, Look
from captioner.hub import BUNDLED_WEIGHTS, load_model
from captioner.lab import compose

RED_AT = (0.25, 0.75)
BLUE_AT = (0.75, 0.25)


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    model = load_model(BUNDLED_WEIGHTS)
    scene = compose(model, [
        {"shape": "circle", "color": "red", "size": "big", "position": RED_AT},
        {"shape": "square", "color": "blue", "size": "big", "position": BLUE_AT}])
    path = tmp_path_factory.mktemp("look") / "scene.png"
    scene.image.save(path)
    return path


@pytest.mark.parametrize("point, colour", [(RED_AT, "red"), (BLUE_AT, "blue")])
def test_cli_look_here_names_the_colour_at_x_y(scene_png, capsys, point, colour):
    code = cli.main(["caption", str(scene_png), "--weights", str(BUNDLED_WEIGHTS), "--json",
                     "--beam-size", "1", "--prefix", "a big",
                     "--look-here", f"3:{point[0]},{point[1]}"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert record["tokens"][:3] == ["a", "big", colour]


@pytest.mark.parametrize("point, colour", [(RED_AT, "red"), (BLUE_AT, "blue")])
def test_api_look_here_names_the_colour_at_x_y(scene_png, tmp_path, monkeypatch, point,
                                                colour):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    demo = Demo.load(str(BUNDLED_WEIGHTS), device="cpu")
    demo.allow_files([scene_png])
    answer = demo.api(str(scene_png), 1, 12, prefix="a big", look=Look(3, *point))
    assert answer["tokens"][:3] == ["a", "big", colour]
    grid = demo.model.config.grid_size
    used = np.asarray(answer["attention"][2]).reshape(grid, grid)
    assert np.allclose(used, point_map(demo.cell_centres, *point), atol=1e-5)


@pytest.mark.parametrize("value, parsed", [("3:0.25,0.7", (2, 0.25, 0.7)),
                                           ("1:0,1", (0, 0.0, 1.0)),
                                           ("12:1,0", (11, 1.0, 0.0))])
def test_look_here_argument_is_word_then_x_then_y(value, parsed):
    assert cli.look_here(value) == parsed


@pytest.mark.parametrize("value, message", [
    ("3:0.2", "'3:0.2' is not WORD:X,Y (e.g. 3:0.25,0.7)"),
    ("3:0.2,0.3,0.4", "'3:0.2,0.3,0.4' is not WORD:X,Y (e.g. 3:0.25,0.7)"),
    ("x:0.2,0.3", "'x:0.2,0.3' is not WORD:X,Y (e.g. 3:0.25,0.7)"),
    ("0:0.2,0.3", "'0:0.2,0.3': WORD counts from 1 and X,Y are fractions in [0, 1]"),
    ("2:1.01,0.3", "'2:1.01,0.3': WORD counts from 1 and X,Y are fractions in [0, 1]"),
    ("2:0.3,1.01", "'2:0.3,1.01': WORD counts from 1 and X,Y are fractions in [0, 1]"),
    ("2:-0.1,0.3", "'2:-0.1,0.3': WORD counts from 1 and X,Y are fractions in [0, 1]"),
    ("2:0.3,-0.1", "'2:0.3,-0.1': WORD counts from 1 and X,Y are fractions in [0, 1]"),
])
def test_bad_look_here_arguments_say_what_is_expected(value, message):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        cli.look_here(value)
    assert str(error.value) == message
