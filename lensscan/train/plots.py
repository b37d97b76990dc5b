"""Evaluation plots (PNG): ROC, PR, confusion matrix, score histograms, history, Grad-CAM."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lensscan.train.metrics import pr_curve, roc_curve  # noqa: E402


def plain(text: str) -> str:
    """A label from data or a card (an id, a model name) as plain text: matplotlib reads
    ``$...$`` as math, which drew other text or failed the whole report, and leaves labels
    starting with ``_`` out of legends."""
    text = str(text).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text  # "_x": hidden from legends


def roc_plot(path: str, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """ROC curves (log FPR axis, where lens searches operate)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(np.maximum(fpr, 1e-5), tpr, label=plain(name))
    ax.set_xscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("recall (true-positive rate)")
    ax.axvline(1e-3, color="grey", lw=0.5, ls="--")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pr_plot(path: str, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (y, s) in curves.items():
        p, r, _ = pr_curve(y, s)
        ax.plot(r, p, label=plain(name))
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_plot(path: str, c: dict[str, int], threshold: float) -> None:
    m = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(np.log10(m + 1), cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xticks([0, 1], ["non-lens", "lens"])
    ax.set_yticks([0, 1], ["non-lens", "lens"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"threshold {threshold:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def histogram_plot(path: str, y: np.ndarray, s: np.ndarray, threshold: float) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(0, 1, 41)
    ax.hist(s[y == 0], bins, alpha=0.6, label="non-lenses", log=True)
    ax.hist(s[y == 1], bins, alpha=0.6, label="lenses", log=True)
    ax.axvline(threshold, color="k", lw=0.8)
    ax.set_xlabel("score")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def history_plot(path: str, histories: dict[str, list[dict]]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for name, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["train_loss"] for h in hist], label=plain(name))
        axes[1].plot(ep, [h["val_auc"] for h in hist], label=plain(name))
    axes[0].set_ylabel("training loss")
    axes[1].set_ylabel("validation ROC AUC")
    for a in axes:
        a.set_xlabel("epoch")
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def gradcam_plot(path: str, rgb: list[np.ndarray], cams: list[np.ndarray],
                 titles: list[str]) -> None:
    n = len(rgb)
    fig, axes = plt.subplots(2, max(n, 1), figsize=(1.6 * max(n, 1), 3.4), squeeze=False)
    for k in range(n):
        axes[0, k].imshow(rgb[k], origin="lower")
        axes[1, k].imshow(rgb[k], origin="lower")
        axes[1, k].imshow(cams[k], origin="lower", cmap="inferno", alpha=0.55)
        axes[0, k].set_title(titles[k], fontsize=7, parse_math=False)  # ids from shards
        for a in axes[:, k]:
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
