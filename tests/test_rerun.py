"""Reruns on new models, offline: a local Hugging Face checkpoint end to end through
``python -m hvp_utils.cli.rerun``, and the inputs the runner must refuse."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hvp_utils
from hvp_utils.cli import rerun
from hvp_utils.core.models import UnsupportedArchitectureError, load_local_checkpoint
from hvp_utils.core.toy_model import TOY_MODEL_DIR, load_tokenizer

REPO = Path(__file__).resolve().parents[1]


def save_checkpoint(directory: Path, family: str = "gpt2") -> Path:
    """A tiny random-initialised causal LM with the toy word-level tokenizer (IOI names are
    single tokens), written with ``save_pretrained`` like any Hugging Face checkpoint."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer(TOY_MODEL_DIR)
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    if family == "gpt2":
        config = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=32, **ids)
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32,
            **ids,
        )
        model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_local_checkpoint_matches_the_hugging_face_model(tmp_path, family):
    from transformers import AutoModelForCausalLM

    path = save_checkpoint(tmp_path / f"my-{family}", family)  # "llama" in the path is fine
    model = hvp_utils.load_model(str(path), dtype="float64")
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 32
    tokens = model.to_tokens("When Mary and John went to the store")
    reference = AutoModelForCausalLM.from_pretrained(path).double().eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), reference(tokens).logits, atol=1e-6, rtol=0)
    task = hvp_utils.ioi_dataset(model, n_prompts=4)
    heads = hvp_utils.components(model, "head_out")
    assert torch.isfinite(hvp_utils.atp(model, task, heads).values).all()


def test_unsupported_architecture_names_what_is_missing(tmp_path):
    from transformers import CTRLConfig, CTRLLMHeadModel

    config = CTRLConfig(n_layer=1, n_embd=32, n_head=4, dff=64, vocab_size=100)
    CTRLLMHeadModel(config).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedArchitectureError, match="CTRLLMHeadModel.*GPT2LMHeadModel"):
        load_local_checkpoint(tmp_path)


def write_tiny_notebook(directory: Path) -> Path:
    """``01_tiny.ipynb``: a ``parameters`` cell declaring ``model_name`` and three quick cells."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    parameters = new_code_cell('model_name = "toy-ioi"', metadata={"tags": ["parameters"]})
    cells = [new_markdown_cell("# Tiny"), parameters]
    cells += [new_code_cell(f"value = {k} * 2\nvalue") for k in range(3)]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    directory.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, directory / "01_tiny.ipynb")
    return directory


@pytest.mark.slow
def test_reruns_show_progress_without_the_tcp_warning(tmp_path):
    """Two reruns at once: each shows its notebooks and cells bars, its kernel runs on IPC
    sockets of its own (so neither prints ipykernel's TCP-without-encryption warning), and
    both succeed."""
    notebooks = write_tiny_notebook(tmp_path / "notebooks")
    command = [sys.executable, "-m", "hvp_utils.cli.rerun", "--model", "toy-ioi"]
    command += ["--notebook-dir", str(notebooks), "--out"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    runs = [
        subprocess.Popen(
            [*command, str(tmp_path / f"runs{k}")],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(2)
    ]
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-3000:]
        assert "1 executed" in out
        assert "without encryption" not in err and "TCP" not in err, err
        assert "notebooks: 100%" in err and re.search(r"01 cells: +\d+%", err), err


def test_the_kernel_manager_papermill_creates_uses_ipc_sockets_of_its_own(tmp_path):
    from nbclient import NotebookClient
    from nbformat.v4 import new_notebook

    client = NotebookClient(new_notebook(), config=rerun.kernel_config(tmp_path))
    manager = client.create_kernel_manager()  # nbclient's own class, configured; not started
    assert manager.transport == "ipc" and manager.ip == str(tmp_path / "kernel")


def run_main(capsys, *argv: str) -> tuple[int, str]:
    """``rerun.main`` on ``argv``: its exit code and what it printed to stderr."""
    code = rerun.main(list(argv))
    return code, capsys.readouterr().err


def test_unknown_notebook_lists_the_available_ones(capsys, tmp_path):
    code, err = run_main(
        capsys, "--model", "toy-ioi", "--notebooks", "01,99", "--out", str(tmp_path)
    )
    assert code == 2 and "unknown notebook(s) 99" in err and "01 (01_activation" in err


def test_unknown_parameter_is_an_error_listing_the_valid_ones(capsys, tmp_path):
    code, err = run_main(
        capsys, "--model", "toy-ioi", "--notebooks", "01", "--param", "n_promts=4", "--out", "x"
    )
    assert code == 2 and "unknown parameter(s) n_promts" in err
    assert "n_prompts" in err.split("valid:")[1]


def test_unknown_model_is_an_error(capsys, tmp_path):
    code, err = run_main(
        capsys, "--model", "gpt2-smal", "--notebooks", "01", "--out", str(tmp_path)
    )
    assert code == 2 and "unknown model 'gpt2-smal'" in err


def test_a_result_with_other_parameters_is_not_overwritten(capsys, tmp_path):
    out = tmp_path / "toy-ioi"
    out.mkdir()
    key = "01_activation_vs_attribution_patching"
    (out / f"{key}.ipynb").write_text("{}")
    entry = {"parameters": {"model_name": "toy-ioi", "n_prompts": 32}, "status": "ok"}
    (out / "manifest.json").write_text(json.dumps({"notebooks": {key: entry}}))
    argv = ["--model", "toy-ioi", "--notebooks", "1", "--param", "n_prompts=4", "--out"]
    code, err = run_main(capsys, *argv, str(tmp_path))
    assert code == 2 and "refusing to overwrite" in err and "--force" in err
    assert (out / f"{key}.ipynb").read_text() == "{}"
    # an executed notebook the manifest does not know is protected too
    (out / "manifest.json").unlink()
    code, err = run_main(capsys, *argv, str(tmp_path))
    assert code == 2 and "is not in" in err and "refusing to overwrite" in err


def test_param_values_are_python_literals_else_strings():
    parsed = rerun.parse_params(["n=4", "dtype=float32", "layer=None", "kinds=['head_out']"])
    assert parsed == {"n": 4, "dtype": "float32", "layer": None, "kinds": ["head_out"]}
    with pytest.raises(rerun.RerunError, match="key=value"):
        rerun.parse_params(["n_prompts"])


def test_low_precision_models_warn_about_second_order_results():
    with pytest.warns(hvp_utils.core.models.LowPrecisionWarning, match="bfloat16.*float64"):
        hvp_utils.load_model("toy-ioi", dtype="bfloat16")


def test_a_notebook_reading_earlier_results_reads_this_run_s(tmp_path):
    """08 declares results_dir: a rerun points it at the run's own folder (unless given)."""
    notebooks = [rerun.available_notebooks()[n] for n in ("01", "08")]
    declared = rerun.check_parameters({}, notebooks)
    jobs = rerun.plan(notebooks, declared, {}, "toy-ioi", tmp_path / "toy-ioi")
    assert "results_dir" not in jobs[0].parameters
    assert jobs[1].parameters["results_dir"] == str((tmp_path / "toy-ioi").resolve())
    given = {"results_dir": "/elsewhere"}
    jobs = rerun.plan(notebooks, declared, given, "toy-ioi", tmp_path / "toy-ioi")
    assert jobs[1].parameters["results_dir"] == "/elsewhere"
