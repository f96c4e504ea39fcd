"""Bad input gets a ValueError that names the field or the file, never an error from deep inside torch,
safetensors or json: SamplingParams values, broken checkpoints, and the `minillm generate` command.

    pytest tests/test_input_errors.py      # a few seconds: tiny checkpoints, a handful of tokens
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from minillm import SamplingParams
from minillm.cli import main
from minillm.model.loader import load_model
from minillm.request import SEED_MAX, SEED_MIN

pytestmark = pytest.mark.ch1
NAN, INF = float("nan"), float("inf")


# SamplingParams ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(temperature=NAN), "temperature"),  # used to end the request with empty text
        (dict(temperature=INF), "temperature"),
        (dict(temperature=10**400), "temperature"),  # an int no float can hold
        (dict(temperature=True), "temperature"),
        (dict(top_p=NAN), "top_p"),
        (dict(top_p=INF), "top_p"),
        (dict(top_p=True), "top_p"),
        (dict(seed=2**70), "seed"),  # used to fail at the first step: "Overflow when unpacking long long"
        (dict(seed=SEED_MAX + 1), "seed"),
        (dict(seed=SEED_MIN - 1), "seed"),
        (dict(seed=True), "seed"),
        (dict(seed=1.0), "seed"),
        (dict(top_k=2.0), "top_k"),
        (dict(max_tokens=4.0), "max_tokens"),
        (dict(max_tokens=False), "max_tokens"),
        (dict(stop_token_ids=[True]), "stop_token_ids"),
        (dict(ignore_eos="no"), "ignore_eos"),
    ],
)
def test_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}"):
        SamplingParams(**kwargs)


def test_seed_range_is_torch_generators():
    """The oracle is torch.Generator.manual_seed itself: what it takes, SamplingParams takes."""
    for seed in (SEED_MIN, -1, 0, 2**63, SEED_MAX):
        SamplingParams(seed=seed, temperature=1.0)
        torch.Generator().manual_seed(seed)
    for seed in (SEED_MIN - 1, SEED_MAX + 1):
        with pytest.raises(ValueError, match=r"SamplingParams\.seed"):
            SamplingParams(seed=seed)
        with pytest.raises((ValueError, RuntimeError)):
            torch.Generator().manual_seed(seed)


# Broken checkpoints ------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tiny_path, tmp_path):
    """A private copy of the tiny Llama 3 checkpoint, free to break."""
    return shutil.copytree(tiny_path, tmp_path / "ckpt")


def load_error(path) -> str:
    with pytest.raises(ValueError) as info:
        load_model(str(path))
    return str(info.value)


def edit_config(path, edit) -> None:
    cfg_file = path / "config.json"
    cfg = json.loads(cfg_file.read_text())
    edit(cfg)
    cfg_file.write_text(json.dumps(cfg))


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda c: c.pop("hidden_size"), "missing required key 'hidden_size'"),
        (lambda c: c.pop("vocab_size"), "missing required key 'vocab_size'"),
        (lambda c: c.update(hidden_size="64"), "hidden_size must be a positive int, got '64'"),
        (lambda c: c.update(num_hidden_layers=2.0), "num_hidden_layers must be a positive int"),
        (lambda c: c.update(intermediate_size=-1), "intermediate_size must be a positive int"),
        (lambda c: c.update(num_key_value_heads=3), "num_key_value_heads=3"),
        (lambda c: c.update(head_dim=None, hidden_size=66), "hidden_size=66 is not a multiple"),
        (lambda c: c.update(rms_norm_eps="1e-6"), "rms_norm_eps must be a positive number"),
        (lambda c: c.update(tie_word_embeddings="false"), "tie_word_embeddings must be true or false"),
        (lambda c: c.update(eos_token_id="</s>"), "eos_token_id"),
        (lambda c: c.update(architectures="LlamaForCausalLM"), "architectures must be a list"),
        (lambda c: c.update(rope_parameters=[1.0]), "rope_parameters must be an object"),
        (lambda c: c["rope_parameters"].pop("low_freq_factor"), "needs 'low_freq_factor'"),
        (lambda c: c["rope_parameters"].update(rope_type="yarn"), "rope_type='yarn' is not supported"),
    ],
)
def test_config_json_errors_name_the_file_and_key(checkpoint, edit, says):
    edit_config(checkpoint, edit)
    message = load_error(checkpoint)
    assert message.startswith(f"{checkpoint / 'config.json'}: ") and says in message, message


@pytest.mark.parametrize(
    "content, says",
    [
        (
            b'{"hidden_size": 64,',
            "not valid JSON (Expecting property name enclosed in double quotes at line 1",
        ),
        (b"", "not valid JSON (Expecting value at line 1, column 1)"),
        (b"\xff\xfe{}", "not valid JSON (not UTF-8 text"),
        (b"[1, 2]", "expected a JSON object, got list"),
    ],
)
def test_unreadable_config_json_is_named(checkpoint, content, says):
    (checkpoint / "config.json").write_bytes(content)
    message = load_error(checkpoint)
    assert message.startswith(f"{checkpoint / 'config.json'}: ") and says in message, message


@pytest.mark.parametrize(
    "corrupt, says",
    [
        (lambda data: data[: len(data) // 2], "not a readable safetensors file"),  # an interrupted download
        (lambda data: data[:6], "not a readable safetensors file"),
        (lambda data: b"", "not a readable safetensors file"),
        (lambda data: b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header!!}" + data[24:], "not a readable"),
        (
            lambda data: b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 371984\n",
            "Git LFS pointer",
        ),
    ],
)
def test_corrupt_safetensors_is_named(checkpoint, corrupt, says):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(corrupt(weights.read_bytes()))
    message = load_error(checkpoint)
    assert message.startswith(f"{weights}: ") and says in message, message


def test_weights_that_disagree_with_config_name_the_weight(checkpoint):
    edit_config(checkpoint, lambda c: c.update(intermediate_size=128))  # the weights hold 112
    message = load_error(checkpoint)
    assert message.startswith(f"{checkpoint / 'model.safetensors'}: "), message
    shapes = r"weight 'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape \((.*)\), but config\.json gives \((.*)\)"
    got, want = re.search(shapes, message).groups()
    assert "112" in got and "128" in want, message


@pytest.mark.parametrize(
    "index, says",
    [
        ('{"weight_map": ', "not valid JSON"),
        ('{"metadata": {}}', "expected a 'weight_map' object"),
        ('{"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}', "'model-00002-of-00002"),
    ],
)
def test_broken_shard_index_is_named(checkpoint, index, says):
    (checkpoint / "model.safetensors.index.json").write_text(index)
    message = load_error(checkpoint)
    assert message.startswith(f"{checkpoint / 'model.safetensors.index.json'}: ") and says in message, message


# minillm generate ---------------------------------------------------------------------------------------


def generate(argv, capsys) -> tuple[str, list[str]]:
    """Run `minillm generate ARGV`; returns (the generated text, stderr lines)."""
    prompt = argv[-1]
    main(["generate", *argv])
    out, err = capsys.readouterr()
    assert out.startswith(prompt) and "\n[" in out, out
    return out[len(prompt) : out.rindex("\n[")], err.splitlines()


def test_cli_names_stage_and_model_and_takes_engine_flags(tiny_path, capsys):
    # a seed at the top of torch's range works end to end (request generator and engine sampler)
    flags = [
        "--stage",
        "naive",
        "--dtype",
        "float32",
        "--max-tokens",
        "3",
        "--ignore-eos",
        "--temperature",
        "1",
    ]
    flags += [
        "--seed",
        str(SEED_MAX),
        "--kv-cache-tokens",
        "512",
        "--max-model-len",
        "64",
        "--block-size",
        "8",
    ]
    flags += ["--max-num-seqs", "2", "--max-num-batched-tokens", "64"]
    main(["generate", "--model", tiny_path, *flags, "hello"])
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"minillm: stage naive, model {tiny_path}, cpu float32"]
    assert "[3 tokens, finish=length" in out  # --ignore-eos ran to --max-tokens


@pytest.mark.parametrize(
    "flags, check",
    [
        (["--regex", "[0-9]{3}"], lambda text: re.fullmatch("[0-9]{3}", text)),
        (["--choice", "yes", "--choice", "no"], lambda text: text in ("yes", "no")),
        (["--json-schema", '{"type": "boolean"}'], lambda text: text in ("true", "false")),
        (["--json-schema", "SCHEMA_FILE"], lambda text: json.loads(text) in ("red", "green")),
    ],
)
def test_cli_constraints(tiny_path, tmp_path, capsys, flags, check):
    schema_file = tmp_path / "colour.json"
    schema_file.write_text(json.dumps({"enum": ["red", "green"]}))
    flags = [str(schema_file) if f == "SCHEMA_FILE" else f for f in flags]
    text, err = generate(
        ["--model", tiny_path, "--stage", "fsm", "--max-tokens", "12", *flags, "x = "], capsys
    )
    assert err == [f"minillm: stage fsm, model {tiny_path}, cpu float32"]
    assert check(text), text


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--temperature", "nan"], "SamplingParams.temperature"),
        (["--top-p", "inf"], "SamplingParams.top_p"),
        (["--seed", str(2**70)], "SamplingParams.seed"),
        (["--json-schema", "{not json"], "--json-schema: not valid JSON"),
        (["--json-schema", "nowhere/schema.json"], "--json-schema: no such file 'nowhere/schema.json'"),
        (["--json-schema", "[1, 2]"], "SamplingParams.json_schema"),
        (["--regex", "a", "--choice", "b"], "at most one of regex, json_schema, choice"),
        (["--stage", "naive", "--regex", "[0-9]"], "stage 'fsm'"),
        (["--kv-cache-tokens", "0"], "kv_cache_tokens"),
        (["--block-size", "0"], "block_size"),
        (["--max-num-seqs", "0"], "max_num_seqs"),
        (["--max-num-batched-tokens", "-1"], "max_num_batched_tokens"),
        (["--max-model-len", "1"], "max_model_len"),
        (["--stage", "naive", "--kv-cache-tokens", "32", "--max-model-len", "64"], "kv_cache_tokens"),
    ],
)
def test_cli_bad_input_is_one_line(tiny_path, capsys, flags, says):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--model", tiny_path, "--max-tokens", "2", *flags, "x"])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("minillm: error: ") and says in err[-1], err
    assert len(err) <= 2  # at most the stage line before it: no traceback


def test_cli_broken_checkpoint_is_one_line(checkpoint, capsys):
    (checkpoint / "config.json").write_text("{")
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(checkpoint), "x"])
    assert capsys.readouterr().err == (
        f"minillm: error: {checkpoint / 'config.json'}: not valid JSON "
        "(Expecting property name enclosed in double quotes at line 1, column 2)\n"
    )


def test_cli_dtype_choices(capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--help"])
    assert info.value.code == 0
    assert "--dtype {float32,bfloat16,float16}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["generate", "--dtype", "None", "x"])
    assert info.value.code == 2 and "invalid choice: 'None'" in capsys.readouterr().err
