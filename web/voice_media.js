// Media helpers of the voice page that hold no page state: waiting for ICE gathering
// before the (never renegotiated) offer goes out, and measuring what each receive slot
// plays. Split from voice.js so that module keeps to the call and the UI.

const GATHER_WAIT_MS = 2500; // wait this long for ICE gathering before sending the offer

/** Wait until ICE gathering completes (or GATHER_WAIT_MS): an offer with candidates in
 * it connects without a trickle round trip; later candidates are trickled. */
export function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, GATHER_WAIT_MS);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() { if (pc.iceGatheringState === "complete") done(); }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** Per receive slot: the dominant frequency (Hz) and RMS of what plays right now, from
 * WebAudio analysers. A debugging aid for people ("is anything arriving?") and what the
 * browser tests assert on. */
export function slotLevels(slots, audioCtx) {
  return slots.filter((s) => s.analyser).map((s) => {
    const a = s.analyser;
    const time = new Float32Array(a.fftSize);
    a.getFloatTimeDomainData(time);
    let sum = 0;
    for (const v of time) sum += v * v;
    const freq = new Float32Array(a.frequencyBinCount);
    a.getFloatFrequencyData(freq);
    const binHz = audioCtx.sampleRate / a.fftSize;
    let best = -Infinity;
    let at = 0;
    for (let i = Math.ceil(50 / binHz); i < freq.length; i++) if (freq[i] > best) { best = freq[i]; at = i; }
    return { slot: s.index, hz: at * binHz, db: best, rms: Math.sqrt(sum / time.length),
      muted: s.audio.muted };
  });
}
