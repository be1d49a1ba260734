"""Who is where in one tick: the sorted lane occupancy the engine's rules read."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from trajstream.simulator.drivers import arrival_time
from trajstream.simulator.world import GREEN, LEFT

if TYPE_CHECKING:
    from trajstream.simulator.engine import Engine

_KEY_SCALE = 1e5  # sort key = segment * scale + s; links are far shorter than this


class Occupancy:
    """Who is where this tick: vehicles (and the neighbouring lane they lean into while
    changing lanes or drifting) sorted by (segment, s), with per-segment rear-most occupants
    and the per-junction counts the stop-line rules need."""

    def __init__(self, eng: Engine, on_link: np.ndarray, own_move: np.ndarray,
                 signal: np.ndarray) -> None:
        st, w = eng.st, eng.world
        self.eng = eng
        n = eng.n
        seg, s, v = st["seg"], st["s"], st["v"]
        lat = st["lat_lc"] + st["drift"]
        # off the lane centre by more than 0.3 m: followers in that neighbouring lane treat
        # the vehicle as theirs too, so nobody squeezes past a half-finished lane change
        intrude = 0.3
        sh_l = np.flatnonzero(on_link & (lat > intrude) & (w.seg_left[seg] < w.n_seg))
        sh_r = np.flatnonzero(on_link & (lat < -intrude) & (w.seg_right[seg] < w.n_seg))
        o_vi = np.concatenate([np.arange(n), sh_l, sh_r])
        o_seg = np.concatenate([seg, w.seg_left[seg[sh_l]], w.seg_right[seg[sh_r]]])
        o_s = s[o_vi]
        order = np.lexsort((o_s, o_seg))
        self.so_seg, self.so_s, self.so_vi = o_seg[order], o_s[order], o_vi[order]
        self.so_key = self.so_seg * _KEY_SCALE + self.so_s
        pos = np.empty(o_vi.shape[0], dtype=np.int64)
        pos[order] = np.arange(o_vi.shape[0])
        self.my_pos = pos[:n]
        first = np.r_[True, self.so_seg[1:] != self.so_seg[:-1]]
        fi = np.flatnonzero(first)
        self.rear_s = np.full(w.n_seg + 1, np.inf)
        self.rear_s[self.so_seg[fi]] = self.so_s[fi]
        self.rear_vi = np.full(w.n_seg + 1, -1, dtype=np.int64)
        self.rear_vi[self.so_seg[fi]] = self.so_vi[fi]
        self.rear_len = np.zeros(w.n_seg + 1)
        self.rear_len[self.so_seg[fi]] = st["length"][self.so_vi[fi]]
        # junction zones: movers per (junction, group), wrecks, vehicles heading to each exit
        mv = np.flatnonzero(~on_link)
        mseg = seg[mv]
        jn = w.seg_junction[mseg]
        grp = w.approach_group[w.seg_approach[mseg]]
        self.zone_count = np.zeros((w.n_junctions, 2), dtype=np.int64)
        np.add.at(self.zone_count, (jn, grp), 1)
        self.zone_wrecks = np.bincount(jn[st["crashed"][mv]], minlength=w.n_junctions)
        self.moving_to = np.bincount(w.seg_next[mseg], minlength=w.n_seg + 1)
        self.rear_v = np.zeros(w.n_seg + 1)
        self.rear_v[self.so_seg[fi]] = v[self.so_vi[fi]]
        self.threat_s, self.left_inside = self._threats(on_link, own_move, mv, signal)

    def _threats(self, on_link: np.ndarray, own_move: np.ndarray, movers: np.ndarray,
                 signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per approach: seconds until its straight or right-turning traffic could reach the
        junction (0 while some is inside; a left turn across it needs a long time), and the
        number of its left turners inside the junction (oncoming traffic waits for them).

        Counted: vehicles with a green signal or committed, assumed to accelerate freely (a
        conservative arrival time); not counted: vehicles queued behind a left turner that
        waits at the line (it waits for us, we go together, and they wait for us inside).
        """
        eng, w = self.eng, self.eng.world
        st = eng.st
        n_app = w.n_junctions * 4
        seg = st["seg"]
        app = w.seg_approach[seg]
        turn = w.seg_turn[own_move]
        is_real = np.zeros(self.so_seg.shape[0], dtype=bool)
        is_real[self.my_pos] = True
        real_seg, real_vi = self.so_seg[is_real], self.so_vi[is_real]
        head = real_vi[np.r_[real_seg[1:] != real_seg[:-1], True]] if real_seg.shape[0] else \
            real_vi
        blocked = np.zeros(w.n_seg + 1, dtype=bool)
        waiting_left = on_link[head] & (turn[head] == LEFT) & (st["v"][head] < 1.0)
        blocked[seg[head[waiting_left]]] = True
        cand = np.flatnonzero(on_link & (app >= 0) & (turn != LEFT) & ~st["crashed"]
                              & ~blocked[seg])
        cand = cand[(signal[app[cand]] == GREEN) | st["committed"][cand]]
        threat = np.full(n_app + 1, np.inf)
        if cand.shape[0]:
            d = np.maximum(w.seg_length[seg[cand]] - st["s"][cand]
                           - 0.5 * st["length"][cand], 0.0)
            np.minimum.at(threat, app[cand],
                          arrival_time(d, st["v"][cand], 1.5, 1.1 * eng.config.speed_limit_mps))
        mseg = seg[movers]
        left_in = w.seg_turn[mseg] == LEFT
        threat[w.seg_approach[mseg[~left_in]]] = 0.0
        left_count = np.bincount(w.seg_approach[mseg[left_in]], minlength=n_app + 1)
        return threat, left_count

    def leaders(self, own_move: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bumper-to-bumper gap to the vehicle ahead (inf if none), its speed and index
        (-1 if none)."""
        eng, w = self.eng, self.eng.world
        st = eng.st
        n = eng.n
        seg, s, length = st["seg"], st["s"], st["length"]
        n_occ = self.so_seg.shape[0]
        nxt = np.minimum(self.my_pos + 1, n_occ - 1)
        same = (self.my_pos + 1 < n_occ) & (self.so_seg[nxt] == seg)
        dist = np.full(n, np.inf)
        lead = np.full(n, -1, dtype=np.int64)
        dist[same] = self.so_s[nxt[same]] - s[same]
        lead[same] = self.so_vi[nxt[same]]
        seg_len = w.seg_length[seg]
        # look ahead from a link: rear-most vehicle on any movement out of this lane
        on_link = w.seg_is_link[seg]
        idx = np.flatnonzero(~same & on_link & (w.seg_approach[seg] >= 0))
        if idx.shape[0]:
            moves = w.link_moves[seg[idx]]
            cand = self.rear_s[moves]
            j = np.argmin(cand, axis=1)
            mm = moves[np.arange(idx.shape[0]), j]
            found = np.isfinite(cand[np.arange(idx.shape[0]), j])
            dist[idx[found]] = seg_len[idx[found]] - s[idx[found]] + self.rear_s[mm[found]]
            lead[idx[found]] = self.rear_vi[mm[found]]
            rest = idx[~found]
            om = own_move[rest]
            ex = w.seg_next[om]
            ok = np.isfinite(self.rear_s[ex])
            r2 = rest[ok]
            dist[r2] = seg_len[r2] - s[r2] + w.seg_length[om[ok]] + self.rear_s[ex[ok]]
            lead[r2] = self.rear_vi[ex[ok]]
        # look ahead from a movement: rear-most vehicle on the lane it leads to
        idx = np.flatnonzero(~same & ~on_link)
        if idx.shape[0]:
            ex = w.seg_next[seg[idx]]
            ok = np.isfinite(self.rear_s[ex])
            r = idx[ok]
            dist[r] = seg_len[r] - s[r] + self.rear_s[ex[ok]]
            lead[r] = self.rear_vi[ex[ok]]
        has = lead >= 0
        gap = np.full(n, np.inf)
        lead_v = st["v"].copy()
        gap[has] = dist[has] - 0.5 * (length[has] + length[lead[has]])
        lead_v[has] = st["v"][lead[has]]
        return gap, lead_v, lead

    def neighbours(self, tseg: np.ndarray, s: np.ndarray, length: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """In lane ``tseg`` at ``s``: gap to and index of the vehicle ahead and behind
        (inf and -1 when none)."""
        st = self.eng.st
        n_occ = self.so_seg.shape[0]
        pos = np.searchsorted(self.so_key, tseg * _KEY_SCALE + s)
        ahead = np.minimum(pos, n_occ - 1)
        has_a = (pos < n_occ) & (self.so_seg[ahead] == tseg)
        behind = np.maximum(pos - 1, 0)
        has_b = (pos > 0) & (self.so_seg[behind] == tseg)
        f_vi = np.where(has_a, self.so_vi[ahead], -1)
        b_vi = np.where(has_b, self.so_vi[behind], -1)
        f_gap = np.where(has_a, self.so_s[ahead] - s - 0.5 * (length + st["length"][f_vi]),
                         np.inf)
        b_gap = np.where(has_b, s - self.so_s[behind] - 0.5 * (length + st["length"][b_vi]),
                         np.inf)
        return f_gap, f_vi, b_gap, b_vi
