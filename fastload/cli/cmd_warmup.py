"""``fastload warmup``: compile fastload's kernels into Numba's cache ahead of time
(:mod:`fastload.warmup`), e.g. in a Dockerfile, so that the first run's first batch does not
wait for them."""
from __future__ import annotations

_ALL_TARGETS = ("centernet", "masks", "fcos", "keypoints")


def _cmd_warmup(args) -> int:
    from fastload.augment.config import AugmentConfig
    from fastload.targets.specs import DatasetInfo, resolve_targets
    from fastload.warmup import loader_jobs, warm_up

    cfg = AugmentConfig.from_file(args.augment) if args.augment else AugmentConfig()
    names = [t for t in args.targets.split(",") if t] if args.targets is not None \
        else list(_ALL_TARGETS)
    # the kernels' argument types do not depend on the number of classes or keypoints
    specs = resolve_targets(names, DatasetInfo(num_classes=1, classes=["object"],
                                               num_keypoints=1))
    dtypes = [d for d in args.dtypes.split(",") if d] if args.dtypes else [cfg.dtype]
    jobs = []
    for d in dtypes:
        c = AugmentConfig.from_dict({**cfg.to_dict(), "dtype": d})
        jobs += loader_jobs(c, specs, backend=args.backend, device_type=args.device)
    report = warm_up(jobs, helper=False if args.one_process else None)
    done = report.here + report.by_helper
    print(f"warmup: {len(done)} job(s) ({', '.join(done) or 'all done already'}) in "
          f"{report.seconds:.1f} s; {report.compiled_here} Numba compilation(s) in this process"
          + (f", {len(report.by_helper)} job(s) compiled by a helper process"
             if report.helper_returncode is not None else ""))
    for kind, err in report.errors:
        print(f"warmup: {kind} failed: {err}")
    return 1 if report.errors else 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "warmup", help="compile fastload's kernels into Numba's on-disk cache ahead of time")
    p.add_argument("--augment", default=None, metavar="FILE",
                   help="AugmentConfig as .json/.yaml (default: AugmentConfig())")
    p.add_argument("--targets", default=None, metavar="LIST",
                   help=f"comma-separated target names (default: {','.join(_ALL_TARGETS)}; "
                        "'' for none)")
    p.add_argument("--dtypes", default=None, metavar="LIST",
                   help="comma-separated output dtypes (default: the config's)")
    p.add_argument("--backend", default="cpu", choices=["cpu", "dali"],
                   help="the loader's image backend (default: cpu, the fused kernel)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="the loader's device (with --backend dali: where DALI runs)")
    p.add_argument("--one-process", action="store_true",
                   help="compile in this process only (default: a helper process too when a "
                        "core is idle; see fastload.warmup)")
    p.set_defaults(func=_cmd_warmup)
