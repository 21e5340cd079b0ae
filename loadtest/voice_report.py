"""The report of a ``hearth loadtest voice`` run: the keys every scenario has
(:mod:`loadtest.report`) and the ``voice``, ``server`` and ``generator`` blocks whose
meanings :mod:`loadtest.voice` documents, plus the summary the CLI prints."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from typing import Any

import psutil

from loadtest.accounting import Histogram
from loadtest.target import (
    ProcSample,
    Target,
    cpu_percent_between,
    hearth_pids,
    listening_pids,
)
from loadtest.voice_audio import (
    FRAMES_PER_S,
    SentBurst,
    match_detections,
)
from loadtest.voice_direct import heard_speakers
from loadtest.voice_peer import (
    ParticipantFinal,
    VoiceGo,
)
from loadtest.voice_plan import (
    DIRECT,
    MEDIA_WORKER_MARK,
    Generator,
    Room,
    VoiceOptions,
)


def media_worker_pids(target: Target) -> list[int]:
    """Media worker processes of a local server: descendants of the server the
    harness started (or of the processes listening on its port, and of their
    supervisor) whose command line names ``rooms.media.worker``."""
    roots = [target.process.pid] if target.process is not None else \
        listening_pids(target.port)
    for pid in list(roots):  # under --workers N the supervisor owns the media workers
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(pid).parent()
            if parent is not None and "server.cli" in " ".join(parent.cmdline()):
                roots.append(parent.pid)
    found: set[int] = set()
    for pid in roots:
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            continue
        for child in children:
            with contextlib.suppress(psutil.Error):
                if MEDIA_WORKER_MARK in " ".join(child.cmdline()):
                    found.add(child.pid)
    return sorted(found)


def gateway_pids(target: Target) -> list[int]:
    if target.process is not None and target.name == "hearth":
        return hearth_pids(target.process)
    return listening_pids(target.port) if target.local else []


def percentiles_ms(values_s: list[float]) -> dict[str, float | int | None]:
    """p50 / p95 / max (and count) of a few hundred durations (exact, not bucketed)."""
    if not values_s:
        return {"p50": None, "p95": None, "max": None, "count": 0}
    ordered = sorted(values_s)

    def q(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered))
                                                              - 1))], 3)

    return {"p50": q(0.50), "p95": q(0.95), "max": round(1000 * ordered[-1], 3),
            "count": len(ordered)}



class VoiceReporting:
    """The report half of :class:`loadtest.voice.VoiceRun`: everything it reads is what
    the run collected (declared here, set by the run)."""

    opts: VoiceOptions
    target: Target
    started_at: float
    generators: list[Generator]
    notes: list[str]
    errors: dict[str, int]
    phases: dict[str, float]
    samples: dict[str, ProcSample | None]
    rooms: list[Room]
    slots_limit: int
    go: VoiceGo | None
    interrupted: str | None
    machine_cpu: dict[str, tuple[float, float]]
    direct: bool

    def report(self) -> dict[str, Any]:
        from loadtest.report import machine

        opts, go = self.opts, self.go
        finals: list[ParticipantFinal] = [p for g in self.generators if g.final
                                          for p in g.final.participants]
        errors: dict[str, int] = {}
        for g in self.generators:
            for code, n in (g.final.errors if g.final else {}).items():
                errors[code] = errors.get(code, 0) + n
        channel_of = {spec.user_id: room.channel_id for room in self.rooms
                      for spec in room.specs}
        connected = [p for p in finals if p.connected]
        # bursts sent in the window, per room and speaker, by parity
        sent: dict[tuple[int, int], dict[int, list[SentBurst]]] = {}
        messages_sent = 0
        if self.direct:
            # Each process fed its listeners from its own copy of every speaker's
            # microphone: a listener's bursts are its process's copy's.
            channel_of = {p.user_id: g.index for g in self.generators if g.final
                          for p in g.final.participants}
            bursts_of: dict[int, int] = {}
            for g in self.generators:
                for copy in g.final.copies if g.final else []:
                    by_parity = sent.setdefault((g.index, copy.speaker), {0: [], 1: []})
                    for index, t in copy.bursts:
                        by_parity[index % 2].append(SentBurst(index=index, t=t))
                    bursts_of[copy.speaker] = max(bursts_of.get(copy.speaker, 0),
                                                    len(copy.bursts))
            messages_sent = sum(bursts_of.values())
        for p in finals if not self.direct else []:
            if p.speaker < 0:
                continue
            by_parity = sent.setdefault((channel_of[p.user_id], p.speaker), {0: [], 1: []})
            for index, t in p.bursts:
                by_parity[index % 2].append(SentBurst(index=index, t=t))
                messages_sent += 1
        latency = Histogram()
        heard = duplicated = out_of_order = unmatched = expected = 0
        missing_a_speaker = 0  # decoding listeners that heard no burst of a speaker
        for p in connected:
            if p.lean:  # lean listeners decode nothing: no mouth-to-ear from them
                continue
            room = channel_of[p.user_id]
            per_speaker: dict[int, list[tuple[int, float]]] = {}
            for _slot, tone, t in p.detections:
                per_speaker.setdefault(tone // 2, []).append((tone % 2, t))
            for (channel_id, speaker), by_parity in sent.items():
                if channel_id != room or speaker == p.speaker:
                    continue
                if self.direct and speaker not in heard_speakers(p.speaker, opts.speakers,
                                                                 p.slots_offered):
                    continue
                expected += len(by_parity[0]) + len(by_parity[1])
                m = match_detections(by_parity, per_speaker.pop(speaker, []))
                heard += m.heard
                missing_a_speaker += not m.heard and bool(by_parity[0] or by_parity[1])
                duplicated += m.duplicated
                out_of_order += m.out_of_order
                unmatched += m.unmatched
                for s in m.latencies_s:
                    latency.record(int(s * 1e6))
            unmatched += sum(len(v) for v in per_speaker.values())  # tones of nobody
        duration = self.phases.get("measure_s", opts.duration_s)
        server = self._server_block(len(connected))
        # Frames are counted by the generators over exactly [measure_start,
        # measure_stop); measure_s also holds the coordinator's own lateness and /proc
        # sampling (up to a few hundred ms on a loaded machine), so rates use the window.
        window = go.measure_stop - go.measure_start if go is not None else duration
        voice = self._voice_block(finals, connected, window)
        voice["bursts"] = {"sent": messages_sent, "expected": expected, "heard": heard,
                           "unmatched_detections": unmatched,
                           "listener_speaker_pairs_unheard": missing_a_speaker}
        voice["transit_ms"] = self._transit_block(connected)
        gen_block = self._generator_block(finals)
        report: dict[str, Any] = {
            "scenario": "voice",
            "target": {"name": self.target.name, "url": self.target.base_url,
                       "local": self.target.local, "notes": self.target.notes},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started_at)),
            "machine": machine(),
            "options": opts.as_dict(),
            "connections_target": opts.participants * opts.rooms,
            "connections_peak": len(connected),
            "connections_failed": len(finals) - len(connected),
            "duration_s": duration,
            "messages_sent": messages_sent,
            "deliveries": heard,
            "deliveries_per_s": round(heard / duration, 1) if duration else None,
            "latency_ms": latency.summary_ms(),
            "lost": max(0, expected - heard),
            "duplicated": duplicated,
            "out_of_order": out_of_order,
            "errors": errors,
            "server": server,
            "generator": gen_block,
            "voice": voice,
            "phases_s": self.phases,
            "latency_histogram_ms": [[round(ub, 4), n] for ub, n in latency.bars_ms()],
            "notes": self.notes,
            "interrupted": self.interrupted,
        }
        if go is None:
            report["interrupted"] = report["interrupted"] or "the measured phase never started"
        return report

    def _server_block(self, connections: int) -> dict[str, Any]:
        s = self.samples
        base, conn = s.get("baseline"), s.get("connected")
        m_start, m_end = s.get("measure_start"), s.get("measure_end")
        cpu = cpu_percent_between(m_start, m_end)
        media = set(getattr(self, "_media_pids", []))
        out: dict[str, Any] = {
            "local": self.target.local,
            "pids": sorted(cpu) if cpu else [],
            "rss_bytes": last.rss_bytes if (last := m_end or conn) else None,
            "rss_baseline_bytes": base.rss_bytes if base else None,
            "rss_per_connection_bytes": round((conn.rss_bytes - base.rss_bytes) / connections)
            if base and conn and connections else None,
            "cpu_percent": round(sum(cpu.values()), 1) if cpu else None,
            "gateway_cpu_percent": round(sum(v for k, v in cpu.items() if k not in media), 1)
            if cpu else None,
            "cpu_percent_per_process": {str(k): v for k, v in cpu.items()},
            "includes": "gateway processes and their media workers",
        }
        return out

    def _voice_block(self, finals: list[ParticipantFinal], connected: list[ParticipantFinal],
                     duration: float) -> dict[str, Any]:
        opts = self.opts
        media_cpu = cpu_percent_between(self.samples.get("media_start"),
                                        self.samples.get("media_end"))
        fps: list[float] = []
        expected_tracks = 0
        active = 0
        outbound = sum(p.slots_offered for p in connected)
        lost = received = 0
        for p in connected:
            hears = opts.speakers - (1 if p.speaker >= 0 else 0)
            # a listener on the server's mix gets one track (slot 0), whatever it offered
            expected_tracks += 1 if opts.mixed() and p.speaker < 0 else \
                min(hears, p.slots_offered)
            for slot in p.slots:
                lost += slot.packets_lost
                received += slot.packets_received
                if slot.frames > 0:
                    active += 1
                    fps.append(slot.frames / duration if duration else 0.0)
        workers = list(getattr(self, "_media_pids", []))
        per_worker: dict[str, int] = {}
        if workers:
            # A room lives on one worker: this run's rooms are on the busiest ones.
            busiest = sorted(media_cpu, key=lambda pid: -media_cpu[pid])[:opts.rooms] \
                if media_cpu else workers[:1]
            for i, room in enumerate(self.rooms):
                pid = str(busiest[i % len(busiest)])
                ids = {s.user_id for s in room.specs}
                per_worker[pid] = per_worker.get(pid, 0) + sum(
                    p.slots_offered for p in connected if p.user_id in ids)
        below = sum(1 for f in fps if f < FRAMES_PER_S - 1)
        lean_fps = [slot.frames / duration for p in connected if p.lean for slot in p.slots
                    if slot.frames > 0] if duration else []
        lean_users = sorted(p.user_id for p in finals if p.lean)
        roles: dict[str, int] = {}
        wrong_roles = 0
        for p in connected:
            roles[str(p.role)] = roles.get(str(p.role), 0) + 1
            wanted = "speaker" if p.speaker >= 0 or not opts.stage else "listener"
            wrong_roles += p.role != wanted and not self.direct  # no server gives roles
        if lean_users:
            self.notes.append(
                f"lean mode: {len(lean_users)} of {len(finals)} participants counted RTP "
                "packets without decoding (voice.transit_ms); latency_ms (mouth-to-ear) "
                f"comes from the {len(finals) - len(lean_users)} decoding ones "
                "(voice.listeners.decoding_user_ids); speakers sent pre-encoded Opus")
            if len(finals) == len(lean_users):
                self.notes.append("no decoding participant: latency_ms (mouth-to-ear) is "
                                  "not measured in this run")
        if wrong_roles:
            self.notes.append(f"{wrong_roles} participant(s) got another role than the "
                              "scenario meant (see voice.roles)")
        return {
            "mode": "stage" if opts.stage else "all-talk",
            "listeners": {
                "requested": opts.listeners_mode,
                "mode": "lean" if opts.lean() else "decode",
                "lean_participants": len(lean_users),
                "decoding_participants": len(finals) - len(lean_users),
                "decoding_user_ids": sorted(p.user_id for p in finals if not p.lean)[:50],
                "speakers_send": "pre-encoded Opus loop" if opts.lean() else
                "PCM encoded by aiortc per frame",
            },
            "server_mix": {"mix_listeners_above": opts.mix_listeners_above,
                           "listeners_on_mix": opts.mixed(),
                           "media_capacity_tracks": opts.media_capacity_tracks},
            "rooms": opts.rooms,
            "participants_per_room": opts.participants,
            "speakers_per_room": opts.speakers,
            "listeners_per_room": opts.participants - opts.speakers,
            "slots_per_participant": sorted({p.slots_offered for p in finals}),
            "server_voice_receive_slots": self.slots_limit,
            "joined": len(connected),
            "failed": len(finals) - len(connected),
            "roles": roles,
            "failures": sorted({p.failure for p in finals if p.failure})[:10],
            "join_to_connected_ms": percentiles_ms(
                [p.join_to_connected_s for p in connected if p.join_to_connected_s is not None]),
            "voice_join_reply_ms": percentiles_ms(
                [p.join_reply_s for p in connected if p.join_reply_s is not None]),
            "media_workers": len(workers),
            "media_worker_pids": workers,
            "media_worker_cpu_percent": round(sum(media_cpu.values()), 1) if media_cpu else None,
            "media_worker_cpu_percent_per_process": {str(k): v for k, v in media_cpu.items()},
            "outbound_tracks": outbound,
            "outbound_tracks_per_media_worker": per_worker,
            "received_tracks_expected": expected_tracks,
            "received_tracks_active": active,
            "frames_per_s_per_track": {
                "min": round(min(fps), 2) if fps else None,
                "median": round(statistics.median(fps), 2) if fps else None,
                "max": round(max(fps), 2) if fps else None,
                "tracks_below_49": below,
                "target": FRAMES_PER_S - 1,
                "lean_tracks": len(lean_fps),
                "lean_min": round(min(lean_fps), 2) if lean_fps else None,
            },
            "packets_received": received,
            "packets_lost": lost,
            "events": self._events(finals),
        }

    def _transit_block(self, connected: list[ParticipantFinal]) -> dict[str, Any]:
        """Lean listeners' figures: transit (NOT mouth-to-ear, see loadtest/voice_lean.py)
        and whether each lean listener recognised packets of every speaker it should
        hear by forward (on the server mix: none; that audio is re-encoded)."""
        opts = self.opts
        transit = Histogram()
        ambiguous = 0
        for g in self.generators:
            if g.final is not None and g.final.transit is not None:
                transit.merge(Histogram.from_wire(g.final.transit))
            ambiguous = max(ambiguous, g.final.payloads_ambiguous if g.final else 0)
        lean = [p for p in connected if p.lean]
        mixed = opts.mixed()
        identified = unidentified = missing = heard_self = 0
        per_listener: list[int] = []
        wanted_sizes: list[int] = []
        go = self.go
        window = max(1e-6, go.measure_stop - go.measure_start if go else opts.duration_s)
        pair_fps: list[float] = []
        for p in lean:
            wanted = set(range(opts.speakers)) - {p.speaker}
            if mixed and p.speaker < 0:
                wanted = set()  # the mix is re-encoded: nothing to recognise
            wanted = set(sorted(wanted)[:p.slots_offered]) if len(wanted) > p.slots_offered \
                else wanted
            got = set(p.identified)
            identified += sum(p.identified.values())
            unidentified += p.unidentified
            heard_self += p.identified.get(p.speaker, 0) if p.speaker >= 0 else 0
            if wanted:
                wanted_sizes.append(len(wanted))
                per_listener.append(len(got & wanted))
                missing += len(wanted) > len(got & wanted)
                pair_fps.extend(p.identified.get(s, 0) / window for s in wanted)
        out: dict[str, Any] = {
            "what": "due instant of the frame on the shared grid -> its RTP packet at a lean "
                    "listener's tap: speaker hand-over lag, SRTP, loopback UDP, the SFU's "
                    "forwarding; no jitter buffer, no decoding, no playout (NOT mouth-to-ear; "
                    "latency_ms is, from the decoding listeners)",
            "lean_listeners": len(lean),
            "packets_identified": identified,
            "packets_unidentified": unidentified,
            "payloads_ambiguous": ambiguous,
            "lean_listeners_missing_a_speaker": missing,
            "speakers_identified_per_lean_listener": {
                "min": min(per_listener) if per_listener else None,
                "expected_min": min(wanted_sizes) if wanted_sizes else None,
                "listeners_checked": len(per_listener),
            },
            "heard_themselves": heard_self,
            "frames_per_s_per_speaker_pair": {
                "min": round(min(pair_fps), 2) if pair_fps else None,
                "median": round(statistics.median(pair_fps), 2) if pair_fps else None,
                "pairs": len(pair_fps),
                "below_49": sum(1 for f in pair_fps if f < FRAMES_PER_S - 1),
            },
        }
        return out | {"latency": transit.summary_ms()}

    @staticmethod
    def _events(finals: list[ParticipantFinal]) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in finals:
            for name, n in p.events.items():
                out[name] = out.get(name, 0) + n
        return out

    def _generator_block(self, finals: list[ParticipantFinal]) -> dict[str, Any]:
        s = self.samples
        cpu = cpu_percent_between(s.get("generator_start"), s.get("generator_end"))
        speakers = [p for p in finals if p.speaker >= 0]
        frames = sum(p.frames_sent for p in speakers)
        late = sum(p.late_frames for p in speakers)
        dropped = sum(p.dropped_frames for p in speakers)
        max_lag = max((p.max_lag_s for p in speakers), default=0.0)
        if self.direct:  # the microphones are the processes' copies
            copies = [c for g in self.generators if g.final for c in g.final.copies]
            frames = sum(c.frames for c in copies)
            late = sum(c.late_frames for c in copies)
            dropped = sum(c.dropped_frames for c in copies)
            max_lag = max((c.max_lag_s for c in copies), default=0.0)
        counts = [len(g.final.participants) for g in self.generators if g.final]
        window = max(1e-6, self.phases.get("measure_s", self.opts.duration_s))
        received = sum(slot.frames for p in finals for slot in p.slots)
        received_lean = sum(slot.frames for p in finals if p.lean for slot in p.slots)
        gen_cpu_s = sum(cpu.values()) / 100 * window
        # What one frame costs the generator (receive path + its share of the speakers'
        # encoding), hence how many 50 frames/s tracks one core's worth drives.
        per_frame_ms = 1000 * gen_cpu_s / received if received and cpu else None
        out: dict[str, Any] = {}
        m = self.machine_cpu
        if "start" in m and "end" in m and m["end"][1] > m["start"][1]:
            busy = 100 * (m["end"][0] - m["start"][0]) / (m["end"][1] - m["start"][1])
            server = cpu_percent_between(s.get("measure_start"), s.get("measure_end"))
            ours = sum(server.values()) + sum(cpu.values())
            out["machine_cpu_busy_percent"] = round(busy, 1)
            out["other_processes_cpu_percent"] = round(max(0.0, busy - ours), 1)
            if busy - ours > 20:
                self.notes.append(f"other processes used about {busy - ours:.0f}% CPU during "
                                  "the measured phase: figures are disturbed")
        return out | {
            "processes": len(self.generators),
            "participants_per_process": max(counts) if counts else None,
            "cpu_percent": round(sum(cpu.values()), 1) if cpu else None,
            "cpu_percent_per_process": {str(k): v for k, v in cpu.items()},
            "max_process_cpu_percent": max(cpu.values()) if cpu else None,
            "received_frames": received,
            "received_frames_lean": received_lean,
            "received_frames_decoded": received - received_lean,
            "cpu_ms_per_received_frame": round(per_frame_ms, 3) if per_frame_ms else None,
            "tracks_per_core_estimate": round(1000 / (FRAMES_PER_S * per_frame_ms))
            if per_frame_ms else None,
            "cost_basis": "all generator CPU (speakers included) / every received frame, "
                          "lean and decoded together",
            "speaker_frames_sent": frames,
            "speaker_frames_late": late,
            "speaker_frames_dropped": dropped,
            "speaker_max_lag_ms": round(1000 * max_lag, 1),
            "behind_schedule": bool(dropped) or bool(frames and late / frames > 0.01)
            or bool(cpu and max(cpu.values()) > 85),
            "rss_bytes": sum(g.final.rss_bytes for g in self.generators if g.final),
        }



def summary(report: dict[str, Any]) -> str:
    """The one-paragraph summary the CLI prints."""
    v = report["voice"]
    lat = report["latency_ms"]
    j = v["join_to_connected_ms"]
    f = v["frames_per_s_per_track"]
    g = report["generator"]
    t = v.get("transit_ms") or {}
    lean_line = [] if not t.get("lean_listeners") else [
        f"  lean listeners {t['lean_listeners']}: transit (not mouth-to-ear) p50 "
        f"{t['latency']['p50']} p99 {t['latency']['p99']} max {t['latency']['max']} ms over "
        f"{t['packets_identified']} packets ({t['packets_unidentified']} unidentified); "
        f"{t['lean_listeners_missing_a_speaker']} missed a speaker"]
    return "\n".join([
        f"voice ({v['mode']}) @ {report['target']['name']}: {v['joined']}/"
        f"{report['connections_target']} joined, mouth-to-ear p50 {lat['p50']} p99 "
        f"{lat['p99']} max {lat['max']} ms, bursts {report['deliveries']}/"
        f"{v['bursts']['expected']} heard (lost {report['lost']}), errors {report['errors']}",
        f"  join->connected p50 {j['p50']} p95 {j['p95']} max {j['max']} ms; frames/s per "
        f"track min {f['min']} median {f['median']} ({v['received_tracks_active']}/"
        f"{v['received_tracks_expected']} tracks); packets lost {v['packets_lost']}",
        (f"  no server ({v['outbound_tracks']} direct speaker->listener tracks); "
         if report["target"]["name"] == DIRECT else
         f"  server cpu {report['server']['cpu_percent']}% (media workers "
         f"{v['media_worker_cpu_percent']}%, {v['media_workers']} worker(s), "
         f"{v['outbound_tracks']} outbound tracks); ")
        + f"generator cpu {g['cpu_percent']}% in "
        f"{g['processes']} process(es), late frames {g['speaker_frames_late']}"
        + (" (BEHIND SCHEDULE)" if g["behind_schedule"] else "")
        + f"; {g['cpu_ms_per_received_frame']} ms CPU per received frame",
    ] + lean_line + [f"  note: {n}" for n in report["notes"]] + [
        "  " + line for peer in (report.get("peers") or {}).values()
        for line in summary(peer).splitlines()] + [
        f"  hearth/{name}: " + ", ".join(f"{k} x{v['ratio']}" for k, v in ratios.items()
                                         if v["ratio"] is not None)
        for name, ratios in (report.get("ratios") or {}).items()])

