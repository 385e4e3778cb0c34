"""experiments/pod_plan.py's search bookkeeping on synthetic reports (the
compiles themselves are vit_jax.compile's, tested in test_compile.py)."""

from experiments import pod_plan

SPEC = "configs/vit_pretrain.py:model=ViT-B_16,dataset=jft,epochs=7"


def test_placement_keys_keep_the_cached_compiles():
    # Keys of compiles made before accumulation, μ dtype and scan were searched.
    assert (
        pod_plan.Placement("tpu-v3-8", 8, "full").key(SPEC, None)
        == f"{SPEC} | tpu-v3-8 | fsdp=8 remat=True dtype=config"
    )
    assert (
        pod_plan.Placement("tpu-v3-8", 1)
        .key(SPEC, "bfloat16")
        .endswith("fsdp=1 remat=False dtype=bfloat16")
    )
    lever = pod_plan.Placement("tpu-v3-8", 8, "dots", accum=4, mu_dtype="bfloat16", scan=True)
    assert lever.key(SPEC, None).endswith("remat=dots dtype=config accum=4 mu=bfloat16 scan=True")
    assert lever.options() == dict(
        fsdp=8, remat="dots", accum_steps=4, adam_mu_dtype="bfloat16", scan=True
    )


def _report(target, devices, seconds, fits=True):
    return {"fits": fits, "num_devices": devices,
            "device_days_bound": 1000 * seconds * devices / 86400}  # fmt: skip


def test_cheapest_and_fastest_within_budget():
    cache = pod_plan.Cache.__new__(pod_plan.Cache)
    reports = {
        "tpu-v3-8 | a": _report("tpu-v3-8", 8, 2.0),  # 185 core-days.
        "tpu-v3-32 | b": _report("tpu-v3-32", 32, 0.45),  # 167: cheapest.
        "tpu-v3-128 | c": _report("tpu-v3-128", 128, 0.125),  # 185, 1.4 days.
        "tpu-v3-512 | d": _report("tpu-v3-512", 512, 0.05),  # 296: over budget.
        "tpu-v3-256 | e": _report("tpu-v3-256", 256, 0.01, fits=False),
        "h100x8 | f": _report("h100x8", 8, 0.01),  # Not a TPU.
    }
    cache.data = {"compiles": {f"{SPEC} | {k} dtype=config": r for k, r in reports.items()}}
    cheapest, fastest = pod_plan.cheapest_and_fastest(cache, SPEC)
    assert cheapest.endswith("| b dtype=config") and fastest.endswith("| c dtype=config")


def test_bfloat16_compute_and_scan_are_never_priced():
    # bf16 changes the numerics; a scanned step's cost model counts one block.
    cache = pod_plan.Cache.__new__(pod_plan.Cache)
    cache.data = {
        "compiles": {
            f"{SPEC} | tpu-v3-8 | fsdp=1 remat=False dtype=config": _report("tpu-v3-8", 8, 2.0),
            f"{SPEC} | tpu-v3-8 | fsdp=1 remat=False dtype=bfloat16": _report("tpu-v3-8", 8, 1.0),
            f"{SPEC} | tpu-v3-8 | fsdp=1 remat=False dtype=config scan=True": _report(
                "tpu-v3-8", 8, 0.2
            ),
        }
    }
    cheapest, fastest = pod_plan.cheapest_and_fastest(cache, SPEC)
    assert cheapest == fastest and cheapest.endswith("dtype=config")


def test_placement_of_a_report_gives_back_its_key():
    # Every fitting TPU compile in the committed plan: its report rebuilds its key.
    cache = pod_plan.Cache(reuse=True)
    checked = 0
    for key, report in cache.data["compiles"].items():
        if report["fits"] and report["platform"] == "tpu":
            spec, _, rest = key.partition(" | ")
            dtype = rest.split(" dtype=")[1].split()[0]
            placement = pod_plan.Placement.of(report)
            assert placement.key(spec, None if dtype == "config" else dtype) == key
            checked += 1
    assert checked > 30


def _dot(lhs: str, rhs: str, contracting: str, batching: str = "") -> str:
    batch = f"batching_dims = {batching}, " if batching else ""
    return (
        f"%0 = stablehlo.dot_general %a, %b, {batch}contracting_dims = {contracting}, "
        f"precision = [DEFAULT, DEFAULT] : (tensor<{lhs}xf32>, tensor<{rhs}xf32>) -> tensor<1xf32>"
    )


def test_mxu_tile_efficiency_by_hand():
    # A projection of 197 tokens by a 768×768 weight fills the 128-wide tiles.
    projection = _dot("1x197x768", "768x768", "[2] x [0]")
    assert pod_plan.mxu_tile_efficiency(projection) == 1.0
    # Attention's scores: 12 heads contract over 64 (tiled to 128); of the two
    # 197-token output sides one is tiled to 256: 64/128 × 197/256.
    scores = _dot("1x197x12x64", "1x197x12x64", "[3] x [3]", "[0, 2] x [0, 2]")
    assert abs(pod_plan.mxu_tile_efficiency(scores) - 64 / 128 * 197 / 256) < 1e-12
    # Together: weighted by FLOPs (12 × 197² × 64 against 197 × 768²).
    useful = 197 * 768 * 768 + 12 * 197 * 197 * 64
    padded = 197 * 768 * 768 + 12 * 197 * 256 * 128
    both = projection + "\n" + scores
    assert abs(pod_plan.mxu_tile_efficiency(both) - useful / padded) < 1e-12


def test_mxu_tile_efficiency_of_real_models():
    # Narrow toy widths waste most of the tile; ViT-B/16's attention costs a few percent.
    assert pod_plan.model_mxu_tile_efficiency("testing", 32) < 0.1
    assert 0.9 < pod_plan.model_mxu_tile_efficiency("ViT-B_16", 224) < 0.99


def test_hbm_share_and_ridge():
    # Half a second of a v3 core's 450 GB/s in a one-second step; the ridge is
    # where FLOPs at peak take as long as the bytes at that bandwidth.
    report = {"bytes_accessed_per_device": 225e9, "cost_model_step_seconds": 1.0}
    assert abs(pod_plan.hbm_share(report) - 0.5) < 1e-12
    assert abs(pod_plan.V3_RIDGE * pod_plan.V3_HBM_BYTES_PER_SECOND - 61.5e12) < 1


def test_a_compile_runs_in_a_child_and_gives_the_in_process_report():
    """The plan compiles each placement in a child process (so that one that
    outgrows the host cannot end the search); the report is the same as the
    compile's in this process."""
    import vit_jax.compile as vc
    from vit_jax.targets import prepare_offline_compilers

    prepare_offline_compilers()
    spec, placement = "configs/fashion_mnist.py", pod_plan.Placement("tpu-v3-8", 1)
    child = pod_plan.compile_within_host_memory(spec, placement, None)
    config = vc.apply_mesh_options(pod_plan.load_config(spec), dtype=None, **placement.options())
    here = vc.compile_train_step(config, placement.target)
    assert child["fits"] and not child.get("host_memory_exceeded")
    assert child["memory"] == here["memory"]
    assert child["cost_model_step_seconds"] == here["cost_model_step_seconds"]


def test_a_compile_that_outgrows_the_host_is_stopped_and_recorded(monkeypatch):
    """A child whose memory would leave the host under the reserve is killed,
    and the placement is recorded as not compiled here, not as a crash of the
    whole search (the kernel's OOM killer would end the plan)."""
    total = pod_plan._host_memory_bytes("MemTotal")
    monkeypatch.setattr(pod_plan, "HOST_MEMORY_RESERVE", total - (64 << 20))  # A 64 MiB cap.
    spec, placement = "configs/fashion_mnist.py", pod_plan.Placement("tpu-v3-8", 1)
    report = pod_plan.compile_within_host_memory(spec, placement, None)
    assert report["host_memory_exceeded"] and not report["fits"]
    assert report["host_memory_gib"] == round((64 << 20) / 2**30, 1)
