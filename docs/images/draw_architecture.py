"""Draw docs/images/memwarp_architecture.png (run from the bundle root: python docs/images/draw_architecture.py)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

fig, ax = plt.subplots(figsize=(14, 7.2))
ax.set_xlim(0, 14)
ax.set_ylim(0, 7.4)
ax.axis("off")


def box(x, y, w, h, text, color, fs=8.5):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#333", lw=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fs)


def arrow(x0, y0, x1, y1, color="#333", style="-|>", ls="-"):
    ax.add_patch(
        FancyArrowPatch((x0, y0), (x1, y1), arrowstyle=style, mutation_scale=10, color=color, lw=1.1, linestyle=ls)
    )


sizes = ["128x128x16", "64x64x16", "32x32x16", "16x16x16", "8x8x16"]
ys = [5.9, 4.7, 3.5, 2.3, 1.1]
# inputs
box(0.1, 6.5, 1.6, 0.6, "moving (ED)\n+ fixed (ES)", "#e8e8e8")
ax.text(1.85, 6.8, "stacked on\nthe batch axis", ha="left", va="center", fontsize=7)
# encoder
for level, (y, s) in enumerate(zip(ys, sizes)):
    text = f"level {level}: " + ("2 x conv-BN-PReLU" if level == 0 else "strided conv (2,2,1)\n+ large-kernel block")
    box(0.2, y - 0.35, 2.6, 0.7, text + f"\n{s}", "#cfe2f3", 7.5)
    if level:
        arrow(1.5, ys[level - 1] - 0.35, 1.5, y + 0.35)
arrow(0.9, 6.5, 1.3, ys[0] + 0.36)
ax.text(1.5, 0.35, "Siamese encoder\n(one set of weights)", ha="center", fontsize=9, weight="bold")
# decoder
for level, (y, s) in enumerate(zip(ys, sizes)):
    if level < 4:
        box(4.0, y - 0.35, 3.0, 0.7, "warp moving features by the\ncoarser field; concat; conv + LK", "#d9ead3", 7.5)
        arrow(2.8, y, 4.0, y, "#777")
        arrow(5.5, ys[level + 1] + 0.35, 5.5, y - 0.35, "#555")
    else:
        box(4.0, y - 0.35, 3.0, 0.7, "bottleneck features", "#d9ead3", 7.5)
        arrow(2.8, y, 4.0, y, "#777")
ax.text(5.5, 0.35, "Laplacian warping decoder\n(coarse to fine)", ha="center", fontsize=9, weight="bold")
# heads
for level, y in enumerate(ys):
    memory = level < 3
    text = (
        "memory head: F = conv(f+m, f-m)\nflow = conf * w(x)F + (1-conf) conv(F)"
        if memory
        else "plain head: conv(f+m, f-m)\n-> residual flow"
    )
    box(7.5, y - 0.35, 3.1, 0.7, text, "#fce5cd" if memory else "#fff2cc", 7.2)
    arrow(7.0, y, 7.5, y)
    integ = "scaling & squaring (7)" if level > 0 else "no integration"
    box(
        11.0,
        y - 0.35,
        2.8,
        0.7,
        (
            f"x(1/2, 1/2, 1) in-plane;\n{integ}; phi_{level} = step + up(phi_{level + 1})"
            if level < 4
            else "x(1/2, 1/2, 1); scaling &\nsquaring (7) -> phi_4"
        ),
        "#ead1dc",
        7.0,
    )
    arrow(10.6, y, 11.0, y)
    if level < 4:
        arrow(12.4, ys[level + 1] + 0.35, 12.4, y - 0.35, "#a64d79", ls="--")
ax.text(
    12.6, 6.75, "final field phi_0 (voxels)\nwarped = moving(x + phi_0(x))", ha="center", fontsize=8.5, weight="bold"
)
# memory
box(
    5.7,
    6.5,
    5.9,
    0.85,
    "anatomical memory M = g(I_4): 4 slots (bg, RV, LVM, LVBP), L2-normalised, shared by levels 0-2;\n"
    "query from the FIXED features only: J = softmax(<q, m_k> / 0.1) (the segmentation);\n"
    "w(x) = sum_k J_k(x) m_k;  conf = 1 - H(J) / log 4",
    "#f4cccc",
    7.2,
)
for y in ys[:3]:
    arrow(10.75, 6.5, 10.62, y + 0.2, "#cc0000", ls=":")
ax.set_title("MemWarp (Zhang et al., MICCAI 2024) as implemented in this bundle", fontsize=11)
fig.tight_layout()
fig.savefig("docs/images/memwarp_architecture.png", dpi=110)
