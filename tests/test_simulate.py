"""The baseline's simulator (NumPy only): reproducible, split by product, ROPE-like structure."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import ropebench
from ropebench.baseline.simulate import FILES, SimulationConfig, simulate, write_simulation
from ropebench.cli import cli

SMALL = SimulationConfig(products=200)


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path):
    for run in ("a", "b"):
        write_simulation(simulate(SMALL, seed=3), tmp_path / run)
    write_simulation(simulate(SMALL, seed=4), tmp_path / "c")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "train.parquet").read_bytes() != (tmp_path / "c" / "train.parquet").read_bytes()


def test_files_and_columns(tmp_path):
    write_simulation(simulate(SMALL, seed=0), tmp_path)
    train = pq.read_table(tmp_path / "train.parquet")
    test = pq.read_table(tmp_path / "test.parquet")
    manifest = pq.read_table(tmp_path / "test_manifest.parquet")
    assert train.column_names == ["item_id", "domain", "product_id", "features"]
    assert test.column_names == ["item_id", "domain", "features"]  # no labels in the test split
    assert manifest.column_names == ["item_id", "domain", "product_id"]
    features = train.schema.field("features").type
    assert pa.types.is_fixed_size_list(features) and features.list_size == 64
    assert features.value_type == pa.float32()
    assert test.column("item_id").to_pylist() == manifest.column("item_id").to_pylist()
    assert test.column("domain").to_pylist() == manifest.column("domain").to_pylist()
    ids = train.column("item_id").to_pylist() + test.column("item_id").to_pylist()
    assert len(set(ids)) == len(ids)


def test_split_by_product_with_rope_like_structure():
    sim = simulate(SMALL, seed=0)
    train_products, test_products = set(sim.train["product_id"]), set(sim.test["product_id"])
    assert not train_products & test_products  # test products are unseen
    assert len(test_products) == round(SMALL.products * SMALL.test_fraction)
    domains = np.concatenate([sim.train["domain"], sim.test["domain"]])
    products = np.concatenate([sim.train["product_id"], sim.test["product_id"]])
    per_product = {p: set(domains[products == p]) for p in np.unique(products)}
    n_domains = np.array([len(d) for d in per_product.values()])
    assert n_domains.min() == 2 and (n_domains == 2).any() and (n_domains == 3).mean() > 0.7
    pairs, counts = np.unique(np.char.add(domains.astype(str), products.astype(str)), return_counts=True)
    assert counts.max() > 1 and counts.mean() > 2  # several items per domain and product


def test_raw_features_match_within_a_domain_not_across():
    # The premise of the ablation: without learning, cross-domain retrieval is near chance.
    sim = simulate(SimulationConfig(products=600), seed=0)
    test = sim.test
    result = ropebench.evaluate(embeddings=test["features"], domains=test["domain"],
                                product_ids=test["product_id"], item_ids=test["item_id"])
    intra = [result.tasks[task]["R@1"] for task in ("P2P", "V2V", "L2L")]
    cross = [result.tasks[task]["R@1"] for task in ("P2V", "V2P", "P2L", "L2P", "V2L", "L2V")]
    assert min(intra) > 40 and max(cross) < 10 and min(intra) > 4 * max(cross), (intra, cross)


def test_too_few_products_is_an_error():
    with pytest.raises(ValueError, match="at least 10"):
        simulate(SimulationConfig(products=5))


def test_cli_simulate_writes_the_three_files(tmp_path):
    result = CliRunner().invoke(cli, ["baseline", "simulate", "--out", str(tmp_path / "sim"),
                                      "--products", "60", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # logs go to stderr
    assert "test.parquet" in result.stderr
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == sorted(FILES)


def test_every_baseline_command_has_an_example():
    for path in (["baseline"], ["baseline", "simulate"], ["baseline", "train"]):
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.output, path
        assert f"ropebench {' '.join(path)}" in result.output
