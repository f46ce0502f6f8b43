"""Every file of the bad-input corpus through the command line: a caption or a clear message."""

import json

from tests.bad_inputs import EXPECTED, write_corpus
from tests.test_cli import run_cli


def test_cli_survives_the_bad_input_corpus(saved_model_dir, tmp_path):
    paths = write_corpus(tmp_path / "corpus")
    result = run_cli(*paths.values(), "--weights", saved_model_dir, "--json", "--beam-size", "2")
    assert result.returncode == 1  # some inputs were refused
    assert "Traceback" not in result.stderr
    captioned = {json.loads(line)["image"] for line in result.stdout.splitlines()}
    errors = result.stderr.splitlines()
    for name, must_caption in EXPECTED.items():
        path = str(paths[name])
        if must_caption:
            assert path in captioned, (name, result.stderr)
        else:
            assert path not in captioned, name
            line = next((e for e in errors if path in e), "")
            assert line.startswith("error: ") and len(line) > len(path) + 15, (name, line)
