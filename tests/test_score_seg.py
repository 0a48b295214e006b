"""tasks.lac.score_seg's out-of-domain corpus: gold words rebuilt from LAC tags, all six sample files read."""
from pathlib import Path

from tasks.lac.data import Rejects
from tasks.lac.score_seg import lac_sample_words


def test_lac_sample_words_follow_the_b_tags(tmp_path: Path):
    root = tmp_path / "lac_sample"
    (root / "train_data").mkdir(parents=True)
    (root / "test_data").mkdir()
    (root / "train_data" / "news_part").write_text("我爱北京\tr-B v-B LOC-B LOC-I\n", encoding="utf-8")
    (root / "test_data" / "test_part").write_text("他去了\tr-B v-B u-B\n坏行\tn-B\n", encoding="utf-8")
    rejects = Rejects()
    assert lac_sample_words(str(tmp_path), rejects) == [["我", "爱", "北京"], ["他", "去", "了"]]
    assert rejects.total == 1  # the line with a tag/char count mismatch is counted, not scored
