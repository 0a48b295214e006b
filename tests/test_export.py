import numpy as np
import paddle

import elmo_paddle  # noqa: F401
from elmo_paddle.elmo import Elmo
from elmo_paddle.export import create_predictor, export_model, main, run_predictor


def test_export_matches_eager_for_any_batch_and_length(tiny_model_dir, tmp_path):
    out = export_model(tiny_model_dir, tmp_path / "exported")  # also checks parity on a sample itself
    assert (out / "model.pdiparams").is_file() and (out / "vocab.json").is_file()
    elmo = Elmo(tiny_model_dir)
    pred = create_predictor(out)
    for sents in (["中国人民经济发展", "我们"], ["今天在北京工作了一个新的社会国家建设改革" * 2], ["", "人", "龘"]):
        ids = elmo.batch_to_ids(sents)
        got = run_predictor(pred, ids.numpy())
        ref = elmo.encode(ids).numpy()
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_export_cli_user_error(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
