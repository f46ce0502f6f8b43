"""`python -m captioner average`: the mix is the weighted mean of the weights, tensor by
tensor, with the shares given (normalised); models that are not fine-tunes of one model, bad
shares and an occupied output folder are refused in one line, before anything is written."""

import pytest
import torch
from safetensors.torch import load_file

from captioner import cli
from captioner.averaging import average_models, mix_states, parse_part, recipe
from captioner.hub import load_model


@pytest.fixture
def two_models(make_model, tmp_path):
    """Two tiny models of one config, with different weights (seeds 0 and 1) and different
    batch-norm counters (7 and 100 batches seen)."""
    folders = []
    for seed, batches in ((0, 7), (1, 100)):
        model = make_model(seed=seed)
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(batches)
        folders.append(model.save(tmp_path / "ab"[seed]))
    return tuple(folders)


def test_the_mix_is_the_weighted_mean_of_every_floating_tensor(two_models, tmp_path):
    a, b = two_models
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    # shares 3 and 1 are normalised to 0.75 and 0.25: asymmetric, so a swapped or unnormalised
    # mix (0.25/0.75, or 3a + b) cannot pass
    assert cli.main(["average", f"{a}:3", f"{b}:1", "--output", str(tmp_path / "mix")]) == 0
    mixed = load_file(tmp_path / "mix" / "model.safetensors")
    assert mixed.keys() == wa.keys()
    floats = [k for k in wa if wa[k].is_floating_point()]
    assert len(floats) > 20
    differing = [k for k in floats if not torch.equal(wa[k], wb[k])]
    assert len(differing) > 20  # the check below is not vacuous
    for k in floats:
        expected = (0.75 * wa[k].double() + 0.25 * wb[k].double()).float()
        torch.testing.assert_close(mixed[k], expected, rtol=0, atol=1e-7)
    # batch-norm's counters are integers: taken from the first model, not averaged
    counters = [k for k in wa if not wa[k].is_floating_point()]
    assert counters and all(torch.equal(mixed[k], torch.tensor(7)) for k in counters)
    # the mix loads as a model with the same config
    assert load_model(tmp_path / "mix").config == load_model(a).config


def test_a_bare_folder_has_share_one(two_models):
    a, b = two_models
    even = average_models([parse_part(str(a)), parse_part(str(b))])
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    name = next(k for k in wa if wa[k].is_floating_point() and not torch.equal(wa[k], wb[k]))
    torch.testing.assert_close(even.state_dict()[name], (wa[name] + wb[name]) / 2)


def test_mix_states_keeps_each_tensor_dtype():
    half = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16), "n": torch.tensor(3)}
    other = {"w": torch.tensor([3.0, 6.0], dtype=torch.float16), "n": torch.tensor(9)}
    mixed = mix_states([half, other], [1, 3])
    assert mixed["w"].dtype == torch.float16 and mixed["w"].tolist() == [2.5, 5.0]
    assert mixed["n"].item() == 3


def test_parse_part():
    assert parse_part("runs/a:0.25") == ("runs/a", 0.25)
    assert parse_part("runs/a") == ("runs/a", 1.0)
    assert parse_part("owner/name") == ("owner/name", 1.0)
    assert parse_part(r"C:\runs\a") == (r"C:\runs\a", 1.0)  # a drive, not a share
    assert parse_part(r"C:\runs\a:2") == (r"C:\runs\a", 2.0)
    for bad in ("runs/a:0", "runs/a:-1", "runs/a:nan", "runs/a:inf"):
        with pytest.raises(ValueError, match="the share must be a positive number"):
            parse_part(bad)
    with pytest.raises(ValueError, match="no model folder before ':2'"):
        parse_part(":2")


def test_recipe_states_the_normalised_shares():
    assert recipe([("weights", 9), ("runs/b", 1)]) == "0.9 x weights + 0.1 x runs/b"


@pytest.mark.parametrize("models, message", [
    (lambda a, b, hard: [f"{a}:0", str(b)], lambda a, b, hard:
     f"error: '{a}:0': the share must be a positive number, got 0"),
    (lambda a, b, hard: [str(a)], lambda a, b, hard: "error: averaging needs at least two models"),
    (lambda a, b, hard: [str(a), str(hard)], lambda a, b, hard:
     f"error: {hard}: its config differs from that of {a} in attention; only fine-tunes of one "
     "model can be averaged"),
    (lambda a, b, hard: [str(a), str(a.parent / "nowhere")], lambda a, b, hard:
     f"error: {a.parent / 'nowhere'}: no such model folder"),
])
def test_refusals_are_one_line_and_write_nothing(two_models, make_model, tmp_path, capsys,
                                                 models, message):
    a, b = two_models
    hard = make_model(seed=0, attention="hard").save(tmp_path / "hard")
    out = tmp_path / "mix"
    assert cli.main(["average", *models(a, b, hard), "--output", str(out)]) == 2
    # the whole line: which model, which setting, and no other command's option (--weights)
    assert capsys.readouterr().err.strip() == message(a, b, hard)
    assert not out.exists()


def test_an_occupied_output_is_refused_and_kept(two_models, capsys):
    a, b = two_models
    before = (b / "model.safetensors").read_bytes()
    assert cli.main(["average", str(a), str(b), "--output", str(b)]) == 2
    assert "already holds a model" in capsys.readouterr().err
    assert (b / "model.safetensors").read_bytes() == before


def test_every_differing_setting_is_named(two_models, make_model, tmp_path):
    a, _ = two_models
    other = make_model(seed=0, hidden_dim=48, attention="hard").save(tmp_path / "other")
    with pytest.raises(ValueError, match=r" in hidden_dim, attention; "):
        average_models([(str(a), 1.0), (str(other), 1.0)])


def test_an_output_that_cannot_be_made_is_one_line(two_models, tmp_path, capsys):
    a, b = two_models
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.main(["average", str(a), str(b), "--output", str(blocker / "mix")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --output {blocker / 'mix'}: cannot write there (")
    assert "\n" not in err and blocker.read_text() == "not a folder"
