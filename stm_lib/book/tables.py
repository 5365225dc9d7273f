"""A table of the paper is one object: `TABLES["5"]` says what the page is, what the paper printed
(rows and claimed orderings come from `paper.py`, where the numbers are typed once), which rows
train, on which data at each profile, and what the page shows.

A new ablation table is one `Table(...)` entry here plus a thin notebook (parameters, `runner.run`,
`report` calls).

Profiles (how big a run is):
- smoke: the pipeline end to end in a minute or two per table; numbers are meaningless.
- proxy: the embedded proxy datasets at CPU scale; every proxy table trains every row for the same
  number of epochs (no table is shortened to save time) with several seeds, and each run is checked
  against the one convergence rule (`stats.CONVERGENCE_RULE`), stored per run.
- full: the paper's settings (section 4.2) on the real dataset: 8 frames at batch 64, 16 frames at
  batch 32, lr 0.01 as stated (the paper does not scale the lr with the batch), 10 clips x 3 crops.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from stm_lib.book import stats
from stm_lib.book.paper import CAPTIONS, CLAIMS, paper_rows

# The fc lr multiplier is TrainConfig's default: x5 (bias x10) when a backbone is loaded (full, proxy:
# the shared start), x1 from scratch (smoke), where x5 kept runs at chance (stm_lib/engine/optim.py).
START = "runs/pretrain/start/backbone.pth"   # the proxy profile's shared start (stm_lib/pretrain.py)
PROFILES: dict[str, dict] = {
    "smoke": dict(threads=1, frames=4, width_mult=0.25, input_size=32, epochs=1, batch_size=16, lr=0.02,
                  lr_steps=(), num_workers=0, clips=1, crops=1, sixteen_frames=False, pretrained=None,
                  data=dict(proxy_videos=80, proxy_classes=4, proxy_frames=8, proxy_resolution=32),
                  speed=dict(width_mult=0.25, input_size=32, batch_size=4, warmup=1, repeats=2),
                  seeds=1),
    # Issue 27: every arm fine-tunes from one shared start (START, built by `stm pretrain` on generated
    # images, never proxy clips; fc x5 as in the paper) at lr 0.01 on 1,600 training clips at 32 px,
    # judged on 1,000 validation clips, 5 seeds. From random weights (the profile until issue 27: 12
    # epochs at 64 px, 800 clips, judged on 200) a quarter of the temporal runs never learnt and the
    # spread between seeds decided more than the modules did. The schedule is the paper's shape (x0.1
    # at 30, 40, 45 of 50 epochs) stretched to 12 epochs, fixed before any run under it: at 4 epochs
    # (x0.1 at 3), set with the frame-difference reference alone, the paper's modules had not left
    # what one frame shows (runs/calibration/README.md, "The schedule").
    "proxy": dict(threads=1, frames=8, width_mult=0.25, input_size=32, epochs=12, batch_size=16, lr=0.01,
                  lr_steps=(7, 10, 11), num_workers=1, clips=1, crops=1, sixteen_frames=False, pretrained=START,
                  data=dict(proxy_videos=2600, proxy_val_clips=1000, proxy_classes=10, proxy_frames=16,
                            proxy_resolution=32),
                  speed=dict(width_mult=1.0, input_size=224, batch_size=16, warmup=1, repeats=3),
                  seeds=5),
    # section 4.2 (stm_lib.config.full_recipe): batch 64 at 8 frames, 32 at 16, lr 0.01 both, no scaling
    "full": dict(frames=8, width_mult=1.0, input_size=224, epochs=50, batch_size=64, lr=0.01,
                 lr_steps=(30, 40, 45), num_workers=8, clips=10, crops=3, sixteen_frames=True,
                 pretrained="torchvision", data=dict(),
                 speed=dict(width_mult=1.0, input_size=224, batch_size=16, warmup=5, repeats=20),
                 seeds=1),
}
GPU_SPEED = dict(warmup=5, repeats=20)   # the proxy profile on a GPU: the paper's protocol, more repeats
GPU_SEEDS = 10                           # proxy tables on a GPU (issue 27 item 6: the whole book, 10 seeds)

# The real datasets: class count (chance on a full-profile page) and what a full-profile run needs
# (sizes: the official train/val splits; Kinetics-400 varies with what is still online).
DATASETS = {
    "ssv1": dict(name="Something-Something v1", classes=174, train=86_017, val=11_522, epochs=50,
                 layout="`20bn-something-something-v1/<id>/00001.jpg ...` and "
                        "`something-something-v1-{labels,train,validation}.csv` (lines `id;label`)"),
    "ssv2": dict(name="Something-Something v2", classes=174, train=168_913, val=24_777, epochs=50,
                 layout="`<id>.webm` and `something-something-v2-{labels,train,validation}.json`"),
    "jester": dict(name="Jester", classes=27, train=118_562, val=14_787, epochs=50,
                   layout="`20bn-jester-v1/<id>/00001.jpg ...` and `jester-v1-{labels,train,validation}.csv`"),
    "kinetics400": dict(name="Kinetics-400", classes=400, train=240_000, val=19_800, epochs=50,
                        layout="`<split>/<class>/<youtube_id>_<start:06d>_<end:06d>.mp4` and a csv "
                               "`label,youtube_id,time_start,time_end,split`"),
    "ucf101": dict(name="UCF-101", classes=101, train=9_537, val=3_783, epochs=25,
                   layout="`UCF-101/<Class>/v_<Class>_gXX_cYY.avi` and `ucfTrainTestlist/` "
                          "(`classInd.txt`, `trainlist0N.txt`, `testlist0N.txt`)"),
    "hmdb51": dict(name="HMDB-51", classes=51, train=3_570, val=1_530, epochs=25,
                   layout="`<class>/<name>.avi` and `<class>_test_split{1,2,3}.txt`"),
}


@dataclass(frozen=True)
class Part:
    """One dataset a table's rows are trained and evaluated on. Most tables have one part (name "");
    Table 4 has "ucf101" and "hmdb51" (fine-tuned from "pretrain"). `metric` is the top-1 key of
    the part in a `Row` ("top1", "top1_ucf101")."""
    name: str
    metric: str
    full_dataset: str
    proxy_dataset: str
    data: dict = field(default_factory=dict)   # profile -> DataConfig fields on top of the profile's


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    real_name: str                          # what the paper trained on, in words
    parts: tuple[Part, ...]
    columns: tuple[tuple[str, str], ...]    # (key, header): "paper:<metric>", a measured metric, or a Row field
    pretrain: Part | None = None            # Table 4: pre-train on this, fine-tune on each part
    complexity: bool = False                # measure params/FLOPs at the paper's scale (Tables 8, 9)
    speed: bool = False                     # measure videos/s (Table 9)
    train: bool = True                      # False: nothing trained (Figure 1 is its own notebook)
    chapter: bool = False                   # a chapter beyond the paper's tables (listed apart, never required)
    rows: tuple[dict, ...] = ()             # a chapter's own rows (no paper numbers); paper tables: paper.py
    own_claims: tuple[tuple[str, str], ...] = ()   # a chapter's orderings to judge (paper tables: paper.CLAIMS)
    speed_frames: tuple[int, ...] = (8, 16)  # frame counts the speed is measured at (Table 9: both)
    tradeoff: bool = False                  # plot accuracy against FLOPs and against measured videos/s
    claims_lead: str = ""                   # what the orderings can and cannot say (a chapter; paper tables: one stock line)
    # rows of this project's, trained beside the paper's at the smoke and proxy profiles (marked
    # `reference`): the frame-difference model the temporal proxies are calibrated with (issue 27)
    references: tuple[tuple[str, str], ...] = ()
    frames: str = ("frames: the paper's; run_frames: as run here (the profile's frame count at smoke/proxy, "
                   "where 16-frame rows are not trained; the paper's at full)")

    @property
    def caption(self) -> str | None:
        return CAPTIONS.get(self.id)

    @property
    def notebook(self) -> str:
        return self.id if self.id == "figure1" or self.chapter else f"table{self.id}"

    def paper_rows(self) -> list[dict]:
        """A fresh copy of the paper's rows (paper.py), a chapter's own rows; [] for Figure 1."""
        if self.chapter:
            return [dict(r) for r in self.rows]
        return paper_rows(self.id) if self.id != "figure1" else []

    @property
    def claims(self) -> list[tuple[str, str]]:
        """(better, worse) row ids the paper's text (a chapter: its seed papers) orders on top-1 of every part."""
        return list(self.own_claims) if self.chapter else list(CLAIMS.get(self.id, []))

    @property
    def metrics(self) -> list[str]:
        return [p.metric for p in self.parts]

    def part(self, name: str) -> Part:
        for p in (*self.parts, *((self.pretrain,) if self.pretrain else ())):
            if p.name == name:
                return p
        raise KeyError(f"table {self.id} has no part {name!r}")

    def data(self, profile: str, part: str = "") -> dict:
        """DataConfig fields (dataset and proxy_*) of one part at one profile (data_root aside)."""
        p, prof = self.part(part), check_profile(profile)
        if profile == "full":
            return {"dataset": p.full_dataset}
        return {"dataset": p.proxy_dataset, **prof["data"], **p.data.get(profile, {})}

    def num_classes(self, profile: str, part: str = "") -> int:
        d = self.data(profile, part)
        return DATASETS[d["dataset"]]["classes"] if profile == "full" else d["proxy_classes"]

    def chance(self, profile: str, part: str = "") -> float:
        return stats.chance(self.num_classes(profile, part))


def check_profile(profile: str) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[profile]


def _one(full: str, proxy_dataset: str = "proxy-temporal", **data) -> tuple[Part, ...]:
    """The single part of a table; `data`: profile -> DataConfig overrides."""
    return (Part("", "top1", full, proxy_dataset, data),)


_ACC = (("setting", "setting"), ("frames", "frames"), ("run_frames", "frames run"), ("paper:top1", "paper top-1"),
        ("top1", "measured top-1"), ("paper:top5", "paper top-5"), ("top5", "measured top-5"), ("status", "status"))
_SSV1 = "Something-Something v1"

TABLES: dict[str, Table] = {t.id: t for t in [
    Table("1", "Something-Something v1 and v2", "Something-Something", _one("ssv1"), _ACC),
    # Jester-like: another draw of the temporal proxy with more classes (Jester has 27)
    Table("2", "Jester", "Jester",
          _one("jester", proxy={"proxy_seed": 1, "proxy_classes": 16}, smoke={"proxy_seed": 1}), _ACC),
    Table("3", "Kinetics-400", "Kinetics-400", _one("kinetics400", "proxy-scene"), _ACC),
    # UCF-101 / HMDB-51-like: small scene proxies with other class counts, fine-tuned from a
    # scene-proxy "pre-training" run (the paper fine-tunes from Kinetics)
    Table("4", "UCF-101 and HMDB-51", "UCF-101 and HMDB-51",
          (Part("ucf101", "top1_ucf101", "ucf101", "proxy-scene",
                {"proxy": {"proxy_seed": 1, "proxy_classes": 12, "proxy_videos": 400, "proxy_val_clips": 0},
                 "smoke": {"proxy_seed": 1, "proxy_classes": 6, "proxy_videos": 60}}),
           Part("hmdb51", "top1_hmdb51", "hmdb51", "proxy-scene",
                {"proxy": {"proxy_seed": 2, "proxy_classes": 6, "proxy_videos": 300, "proxy_val_clips": 0},
                 "smoke": {"proxy_seed": 2, "proxy_classes": 4, "proxy_videos": 48}})),
          (("setting", "setting"), ("pretrain", "paper pre-training"), ("frames", "frames"),
           ("run_frames", "frames run"), ("paper:top1_ucf101", "paper UCF-101"), ("top1_ucf101", "measured UCF-101"),
           ("paper:top1_hmdb51", "paper HMDB-51"), ("top1_hmdb51", "measured HMDB-51"), ("status", "status")),
          pretrain=Part("pretrain", "top1_pretrain", "kinetics400", "proxy-scene")),
    Table("5", "Impact of CSTM and CMM", _SSV1, _one("ssv1"), _ACC,
          references=(("tsn-diff", "frame-difference reference (not the paper's: the proxy's calibration model)"),)),
    Table("6", "Fusion of the two modules", _SSV1, _one("ssv1"), _ACC),
    Table("7", "Location and number of STM blocks", _SSV1, _one("ssv1"),
          (("setting", "setting"), ("stage", "stage"), ("blocks", "blocks"), ("paper:top1", "paper top-1"),
           ("top1", "measured top-1"), ("paper:top5", "paper top-5"), ("top5", "measured top-5"), ("status", "status"))),
    Table("8", "Channel-wise vs ordinary temporal conv", _SSV1, _one("ssv1"),
          (("setting", "setting"), ("paper:params_m", "paper params (M)"), ("params_m", "params (M)"),
           ("paper:flops_g", "paper FLOPs (G)"), ("flops_g", "FLOPs (G)"), ("paper:top1", "paper top-1"),
           ("top1", "measured top-1"), ("status", "status")), complexity=True),
    Table("9", "Runtime and complexity", _SSV1, _one("ssv1"),
          (("setting", "setting"), ("frames", "frames"), ("paper:flops_g", "paper FLOPs (G)"), ("flops_g", "FLOPs (G)"),
           ("paper:params_m", "paper params (M)"), ("params_m", "params (M)"),
           ("paper:videos_per_s", "paper videos/s (1080 Ti)"), ("videos_per_s", "videos/s here"),
           ("ratio_vs_tsm", "speed / TSM"), ("paper:top1", "paper top-1"), ("top1", "measured top-1"),
           ("status", "status")), complexity=True, speed=True),
    # Beyond the paper (issue 13): the seed papers' modules on one footing. Rows carry no paper
    # numbers; the orderings are what each seed's abstract claims (seeds 002-004 in ../shared/seeds).
    Table("relatives", "STM among its relatives", "the temporal and scene proxies",
          (Part("temporal", "top1_temporal", "ssv1", "proxy-temporal"),
           Part("scene", "top1_scene", "kinetics400", "proxy-scene")),
          (("setting", "model"), ("source", "from"), ("params_m", "params (M)"), ("flops_g", "FLOPs (G)"),
           ("videos_per_s", "videos/s"), ("ratio_vs_tsn", "speed / TSN"), ("top1_temporal", "temporal proxy top-1"),
           ("top1_scene", "scene proxy top-1"), ("reported", "their SSv1 top-1, 8 frames (theirs, not ours)"),
           ("status", "status")),
          complexity=True, speed=True, chapter=True, speed_frames=(8,), tradeoff=True,
          # `reported`: Something-Something v1 top-1 at 8 frames, one clip, as each source reports it with
          # ImageNet weights and the full data (../shared/notes/successors.md names the file or table);
          # never measured here, shown beside the proxy numbers so that a reader sees whose number is whose.
          rows=tuple(dict(id=m, setting=name, model=m, frames=8, source=src, reported=rep) for m, name, src, rep in (
              ("tsn", "TSN", "Wang et al. 2016 (the 2D baseline)", "19.7 (STM paper, Table 1; Kinetics start)"),
              ("tsm", "TSM", "Lin et al. 2019", "45.6 (TSM README)"),
              ("stsm", "STSM", "seed 002", ""),
              ("sth", "STH", "seed 004", ""),
              ("st-resnet-rgb", "ST-ResNet, RGB stream", "seed 003", ""),
              ("st-resnet", "ST-ResNet, two-stream", "seed 003", ""),
              ("stm", "STM", "seed 001 (the paper)", "49.2 (STM paper, Table 1)"),
              # STM's successors (issue 30): the same bottleneck slots, ~33-36 GFLOPs at 8 frames
              ("tea", "TEA", "Li et al. 2020 (successor)", "48.9 (TEA paper)"),
              ("tdn", "TDN", "Wang et al. 2021 (successor)", "52.3 (MCG-NJU/TDN README)"),
              ("tam", "TANet (TAM)", "Liu et al. 2021 (successor)", "46.5 (TANet README)"),
              ("tin", "TIN", "Shao et al. 2020 (successor)", "44.25 (mmaction2 0.x)"))),
          # the seed papers' orderings; each successor against TSN, and against STM in the order
          # their reported SSv1 numbers put them (TDN above STM; TEA, TAM and TIN below it)
          own_claims=(("stsm", "tsn"), ("sth", "tsn"), ("st-resnet-rgb", "tsn"), ("st-resnet", "st-resnet-rgb"),
                      ("stm", "tsm"), ("stm", "tsn"),
                      ("tea", "tsn"), ("tdn", "tsn"), ("tam", "tsn"), ("tin", "tsn"),
                      ("tdn", "stm"), ("stm", "tea"), ("stm", "tam"), ("stm", "tin")),
          claims_lead=("Their accuracy claims, judged on the spread between training seeds (`stm_lib/book/stats.py`) "
                       "on each proxy. What a proxy can say: whether a module lets a small network read motion that "
                       "no single frame carries (temporal proxy), and whether it costs anything where motion is a "
                       "nuisance (scene proxy). What it cannot: how the modules rank with ImageNet weights on the "
                       "real datasets, where the seed papers' own numbers come from.")),
    Table("figure1", "Feature maps vs optical flow", _SSV1, _one("ssv1"),
          (("setting", "feature map"), ("corr_with_flow", "correlation with flow magnitude"), ("status", "status")),
          train=False),
]}

def get(table: str) -> Table:
    """TABLES[table] with one clear error for an unknown id."""
    t = TABLES.get(str(table))
    if t is None:
        raise ValueError(f"unknown table {table!r}; choose from {', '.join(TABLES)} (or 'all')")
    return t


def notebook_name(table: str) -> str:
    """"5" -> "table5"; "figure1" -> "figure1"."""
    return get(table).notebook
