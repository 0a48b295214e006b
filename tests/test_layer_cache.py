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
    # the mix over cached layers equals the mix over freshly computed ones (values, not just the shape)
    mask = paddle.to_tensor(np.array([[1] * 4 + [0] * 2, [1] * 2 + [0] * 4, [1] * 6], bool))
    elmo.eval()  # no dropout on the mixed output
    mix = elmo.scalar_mixes[0]  # unequal layer weights, so a mix-up of the cached layers would show
    mix.scalar_parameters.set_value(paddle.to_tensor([1.5, 0.0, -1.5], dtype=mix.scalar_parameters.dtype))
    cached_mix = elmo.mix_layers(paddle.to_tensor(again), mask)["elmo_representations"][0].numpy()
    fresh_mix = elmo(elmo.batch_to_ids(sents))["elmo_representations"][0].numpy()
    assert cached_mix.shape == fresh_mix.shape == (3, 6, elmo.output_dim)
    np.testing.assert_allclose(cached_mix, fresh_mix, rtol=2e-3, atol=2e-3)  # float16 storage
    assert np.abs(fresh_mix).max() > 0.1  # a real signal, not zeros on both sides
