"""Serving takes what people send: the registered `@champion`, in process and behind a real
`mlflow models serve`, answers integer or float pixels, nested or flat lists, numpy arrays, and
every JSON payload kind; the README's `curl` request is sent exactly as written."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from raw_rows import load_model
from servers import free_port, server_process, venv_command, venv_env
from sklearn.datasets import load_digits

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parent.parent / "README.md"
MODEL = "models:/mmpipe-classifier@champion"


def readme_serve_example() -> tuple[list[str], str, dict]:
    """The README's serve command (as argv), the curl URL path and its JSON payload."""
    text = README.read_text()
    block = text.split("<!-- serve-example")[1].split("```bash")[1].split("```")[0]
    serve = next(line for line in block.splitlines() if line.startswith("mlflow models serve"))
    curl = next(line for line in block.splitlines() if line.startswith("curl "))
    url = re.search(r"http://127\.0\.0\.1:\d+(/\S+)", curl).group(1)
    payload = json.loads(re.search(r"-d '(.+)'$", curl).group(1))
    return serve.rstrip(" &").split(), url, payload


@pytest.fixture(scope="module")
def champion(finished_run):
    return load_model(finished_run.tracking_uri, MODEL)


def digits(n: int = 3) -> tuple[np.ndarray, list[str]]:
    images = load_digits().images[:n]  # zero, one, two
    return images, ["a handwritten zero", "the digit one", "a two"][:n]


def test_in_process_accepts_int_float_nested_flat_numpy_and_records(champion):
    images, texts = digits()
    ints = images.astype(np.int64)
    expected = champion.predict(pd.DataFrame({"image": list(images), "text": texts}))
    assert list(expected.columns)[:3] == ["zero", "one", "two"]
    # Trained on corrupted scans (data.image_noise), the champion reads this clean two as a one;
    # the payload forms below are checked against this answer.
    assert list(expected.idxmax(axis=1)) == ["zero", "one", "one"]
    forms = {
        "int nested lists": pd.DataFrame({"image": [i.tolist() for i in ints], "text": texts}),
        "float flat lists": pd.DataFrame({"image": [i.reshape(-1).tolist() for i in images],
                                          "text": texts}),
        "int numpy arrays": pd.DataFrame({"image": list(ints), "text": texts}),
        "C x H x W lists": pd.DataFrame({"image": [i[None].tolist() for i in ints],
                                         "text": texts}),
        "dict of columns": {"image": [i.tolist() for i in ints], "text": texts},
        "list of records": [{"image": i.tolist(), "text": t} for i, t in zip(ints, texts,
                                                                           strict=True)],
    }
    for name, data in forms.items():
        out = champion.predict(data)
        assert np.allclose(out.to_numpy(), expected.to_numpy(), atol=1e-6), name


def test_in_process_names_the_row_of_a_wrong_image(champion):
    images, texts = digits(2)
    bad = pd.DataFrame({"image": [images[0].tolist(), images[1].reshape(-1)[:63].tolist()],
                        "text": texts})
    with pytest.raises(Exception, match=r"image row 1: expected 1x8x8 or 8x8 or 64 pixel "
                                        r"values, got shape 63"):
        champion.predict(bad)


def post(port: int, path: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def server(finished_run):
    """The README's `mlflow models serve` command, on a free port, for the finished run."""
    argv, _, _ = readme_serve_example()
    port = free_port()
    argv[0], argv[argv.index("-p") + 1] = venv_command("mlflow"), str(port)
    with server_process(argv, f"http://127.0.0.1:{port}/ping", finished_run.path / "serve.log",
                        env=venv_env(MLFLOW_TRACKING_URI=finished_run.tracking_uri)):
        yield port


def test_readme_curl_request_is_answered(server):
    _, path, payload = readme_serve_example()
    status, answer = post(server, path, payload)
    assert status == 200, answer
    (row,) = answer["predictions"]
    assert max(row, key=row.get) == "zero"
    assert sum(row.values()) == pytest.approx(1, abs=1e-4)


def test_every_payload_kind_gives_the_in_process_answer(server, champion):
    images, texts = digits()
    ints = [i.astype(int).tolist() for i in images]
    expected = champion.predict(pd.DataFrame({"image": list(images), "text": texts}))
    payloads = {
        "dataframe_split": {"dataframe_split": {"columns": ["image", "text"],
                                                "data": [[i, t] for i, t in zip(ints, texts,
                                                                                strict=True)]}},
        "dataframe_records": {"dataframe_records": [{"image": i, "text": t}
                                                    for i, t in zip(ints, texts, strict=True)]},
        "inputs (columns)": {"inputs": {"image": ints, "text": texts}},
        "inputs (records)": {"inputs": [{"image": i, "text": t}
                                        for i, t in zip(ints, texts, strict=True)]},
        "float flat pixels": {"dataframe_records": [
            {"image": [float(p) for p in np.ravel(i)], "text": t}
            for i, t in zip(images, texts, strict=True)]},
    }
    for name, payload in payloads.items():
        status, answer = post(server, "/invocations", payload)
        assert status == 200, (name, answer)
        got = pd.DataFrame(answer["predictions"])[expected.columns].to_numpy()
        assert np.allclose(got, expected.to_numpy(), atol=1e-5), name


def test_a_wrong_image_is_a_clear_400(server):
    status, answer = post(server, "/invocations", {"dataframe_records": [
        {"image": [[1, 2], [3, 4]], "text": "a zero"}]})
    assert status == 400
    assert "image row 0: expected 1x8x8 or 8x8 or 64 pixel values, got shape 2x2" in \
        answer["message"]
