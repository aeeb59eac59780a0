"""Fast tests of how the test bed finds its binaries (no build, no processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uwm_dev.testbed import assets


def _fake_bin(directory: Path, name: str, executable: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    p = directory / name
    p.write_text("#!/bin/sh\nexit 0\n")
    p.chmod(0o755 if executable else 0o644)
    return p


def test_kubebuilder_assets_are_used_and_nothing_is_built(tmp_path: Path) -> None:
    user = tmp_path / "envtest"
    for n in ("kube-apiserver", "etcd", "kubectl"):
        _fake_bin(user, n)
    cache = tmp_path / "cache"
    _fake_bin(assets.cached_bin_dir({"UWM_UPGRADE_CACHE": str(cache)}), "helm")
    env = {"KUBEBUILDER_ASSETS": str(user), "UWM_UPGRADE_CACHE": str(cache)}
    found = assets.resolve(env, build=False)
    assert found.kube_apiserver == user / "kube-apiserver"
    assert found.etcd == user / "etcd"
    assert found.kubectl == user / "kubectl"
    assert found.helm.parent == assets.cached_bin_dir(env)


def test_single_test_asset_variables_override_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    bin_dir = assets.cached_bin_dir({"UWM_UPGRADE_CACHE": str(cache)})
    for n in assets.BINARIES:
        _fake_bin(bin_dir, n)
    mine = _fake_bin(tmp_path / "mine", "etcd-3.6")
    found = assets.resolve({"UWM_UPGRADE_CACHE": str(cache), "TEST_ASSET_ETCD": str(mine)}, build=False)
    assert found.etcd == mine
    assert found.kube_apiserver == bin_dir / "kube-apiserver"


def test_kubebuilder_assets_missing_a_binary_names_it(tmp_path: Path) -> None:
    user = tmp_path / "envtest"
    _fake_bin(user, "kube-apiserver")
    with pytest.raises(assets.AssetError, match=r"lacks etcd, kubectl"):
        assets.resolve({"KUBEBUILDER_ASSETS": str(user), "UWM_UPGRADE_CACHE": str(tmp_path)}, build=False)


def test_non_executable_test_asset_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    p = _fake_bin(tmp_path, "kube-apiserver", executable=False)
    with pytest.raises(assets.AssetError, match="TEST_ASSET_KUBE_APISERVER"):
        assets.resolve({"TEST_ASSET_KUBE_APISERVER": str(p), "UWM_UPGRADE_CACHE": str(tmp_path)}, build=False)


def test_missing_cache_without_build_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(assets.AssetError, match="testbed build"):
        assets.resolve({"UWM_UPGRADE_CACHE": str(tmp_path)}, build=False)


def test_generated_gomod_replaces_every_staging_module_by_its_published_twin() -> None:
    gomod = assets._kube_gomod()
    minor_patch = assets.KUBERNETES_VERSION.removeprefix("v1.")
    assert f"require k8s.io/kubernetes {assets.KUBERNETES_VERSION}" in gomod
    for m in assets.STAGING_MODULES:
        assert f"k8s.io/{m} => k8s.io/{m} v0.{minor_patch}\n" in gomod
    assert len(assets.STAGING_MODULES) == len(set(assets.STAGING_MODULES)) == 31


def test_ldflags_stamp_the_real_version_for_server_and_client() -> None:
    flags = assets._ldflags_kube()
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion={assets.KUBERNETES_VERSION}" in flags
        assert f"-X {pkg}.gitMajor=1" in flags


def test_cache_lives_outside_the_repository_under_the_user_cache_dir() -> None:
    root = assets.cache_root({"HOME": "/home/u", "XDG_CACHE_HOME": "/home/u/.cache"})
    assert root == Path("/home/u/.cache/uwm-upgrade")
    assert not str(assets.cached_bin_dir(os.environ)).startswith(str(Path(__file__).resolve().parents[2]))


def test_make_assets_prints_one_short_line_naming_versions_and_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`make assets` (`uwm-dev testbed build`) says what it found in one line, not the `Assets(...)` repr."""
    from uwm_dev.cli import main

    cache = tmp_path / "cache"
    for name in assets.BINARIES:
        _fake_bin(assets.cached_bin_dir({"UWM_UPGRADE_CACHE": str(cache)}), name)
    for var in ("KUBEBUILDER_ASSETS", *assets.ENV_BY_BINARY.values()):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("UWM_UPGRADE_CACHE", str(cache))
    assert main(["testbed", "build"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"[testbed] assets: kube-apiserver {assets.KUBERNETES_VERSION}, etcd {assets.ETCD_VERSION}, "
        f"helm {assets.HELM_VERSION} in {assets.cached_bin_dir({'UWM_UPGRADE_CACHE': str(cache)})}"]


def test_described_assets_name_the_users_own_binaries_by_their_folder(tmp_path: Path) -> None:
    user = tmp_path / "envtest"
    for n in ("kube-apiserver", "etcd", "kubectl"):
        _fake_bin(user, n)
    env = {"KUBEBUILDER_ASSETS": str(user), "UWM_UPGRADE_CACHE": str(tmp_path / "cache")}
    _fake_bin(assets.cached_bin_dir(env), "helm")
    line = assets.resolve(env, build=False).describe(env)
    assert line == (f"helm {assets.HELM_VERSION} in {assets.cached_bin_dir(env)}; "
                    f"kube-apiserver, kubectl, etcd from {user}")


def test_a_cache_under_home_is_shown_with_a_tilde(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    env = {"XDG_CACHE_HOME": str(tmp_path / ".cache")}
    for name in assets.BINARIES:
        _fake_bin(assets.cached_bin_dir(env), name)
    line = assets.resolve(env, build=False).describe(env)
    assert line.endswith(" in ~/.cache/uwm-upgrade/" + assets.cached_bin_dir(env).relative_to(
        tmp_path / ".cache" / "uwm-upgrade").as_posix())
