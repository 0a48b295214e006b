import numpy as np
import paddle

from elmo_paddle.elmo import Elmo
from elmo_paddle.layer_cache import ElmoLayerCache


def test_cache_matches_encode_and_persists_across_instances(tiny_model_dir, tmp_path):
    elmo = Elmo(tiny_model_dir)
    sents = [list("中国人民"), list("北京"), list("今天天气很好")]
    direct = elmo.encode(elmo.batch_to_ids(sents)).numpy()
    cache = ElmoLayerCache(elmo, max_mb=64, batch_size=2, cache_dir=tmp_path)
    got = cache(sents).numpy()
    for i, s in enumerate(sents):  # float16 storage: ~1e-3 relative
        np.testing.assert_allclose(got[i, :, :len(s)], direct[i, :, :len(s)], rtol=2e-3, atol=2e-3)
        assert not got[i, :, len(s):].any()  # padding stays zero
    assert cache.report()["misses"] == 3
    cache(sents[:2])
    assert cache.report()["hits"] == 2  # second epoch: lookups only

    fresh = ElmoLayerCache(elmo, max_mb=64, cache_dir=tmp_path)
    fresh.encode_seconds = 0.0
    again = fresh(sents).numpy()
    assert fresh.report()["disk_hits"] == 3 and fresh.report()["misses"] == 0
    np.testing.assert_array_equal(again, got)
    # the mix over cached layers equals the mix over freshly computed ones
    mask = paddle.to_tensor(np.array([[1] * 4 + [0] * 2, [1] * 2 + [0] * 4, [1] * 6], bool))
    assert elmo.mix_layers(paddle.to_tensor(again), mask)["elmo_representations"][0].shape[:2] == [3, 6]
