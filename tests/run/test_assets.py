"""What a run reads: given every path, nothing is built in the cache; given none, the default is built there."""

from __future__ import annotations

from kr1.config import load_config
from kr1.run.assets import resolve_assets


def test_explicit_inputs_build_nothing_in_the_cache(world_dir, index_factory, tiny_model, decoy_index, tmp_path):
    cache = tmp_path / "cache"
    paths = {f"data.{s}_path": world_dir / f"{s}.jsonl" for s in ("train", "dev", "test")}
    overrides = {"data.cache_dir": cache, **paths, "retriever.index_dir": index_factory(2), "model.path": tiny_model,
                 "retriever.decoy_index_dir": decoy_index}
    cfg = load_config("default", [f"{k}={v}" for k, v in overrides.items()])
    assets = resolve_assets(cfg, progress=False, decoy=True)
    assert assets.split_paths("dev") == [world_dir / "dev.jsonl"] and assets.index_dir == index_factory(2)
    assert assets.decoy_index_dir == decoy_index
    assert not cache.exists()


def test_the_synthetic_default_builds_its_world_index_and_decoy_in_the_cache(tiny_model, tmp_path):
    cache = tmp_path / "cache"
    cfg = load_config("default", [f"data.cache_dir={cache}", "data.synthetic_people=40", f"model.path={tiny_model}"])
    assets = resolve_assets(cfg, progress=False, decoy=True)
    [world] = [d for d in cache.glob("world*-seed0-people40") if "-beside-" not in d.name]
    assert assets.split_paths("train") == [world / "train.jsonl"] and assets.questions("dev")
    assert assets.index_dir.parent == cache and (assets.index_dir / "manifest.json").is_file()
    assert "-beside-" in assets.decoy_index_dir.name and (assets.decoy_index_dir / "manifest.json").is_file()
