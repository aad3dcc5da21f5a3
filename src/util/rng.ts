/**
 * Seeded PRNG (xoshiro128**) whose whole state is four uint32s, so a
 * checkpoint can store the coordinator's, and a resumed run hands out the
 * worker seeds the run would have handed out next.
 * All of training's randomness (init, noise, batch indices, shard permutation)
 * comes from here, never from Math.random, so runs are reproducible. (Only a
 * worker's reconnect jitter, which trains nothing, uses Math.random.)
 */
export type RngState = [number, number, number, number];

export class Rng {
  private s: Uint32Array;

  constructor(seed: number) {
    this.s = new Uint32Array(4);
    // splitmix32 expands one seed into a well-mixed state.
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      this.s[i] = fmix32(x);
    }
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }

  /**
   * The stream numbered `counter` of the family `seed`: a worker's draws for
   * one step. Every word of the state depends on both numbers, and for one
   * seed each word is a bijection of the counter's low 32 bits, so no two steps share a
   * state, and a step's draws do not depend on which steps were drawn before
   * it (a resumed or a restarted worker draws what the first would have).
   */
  static keyed(seed: number, counter: number): Rng {
    const r = new Rng(seed);
    const high = Math.floor(counter / 2 ** 32) >>> 0;
    // The counter is mixed with other constants than the seed, so that keyed(a, b) is not keyed(b, a).
    for (let i = 0; i < 4; i++) r.s[i] = fmix32(r.s[i] ^ fmix32((counter ^ COUNTER_KEYS[i]) >>> 0) ^ fmix32(high ^ COUNTER_KEYS[i + 4]));
    if (r.s.every((v) => v === 0)) r.s[0] = 1;
    return r;
  }

  static fromState(state: RngState): Rng {
    const r = new Rng(0);
    r.s.set(state);
    return r;
  }

  state(): RngState {
    return [this.s[0], this.s[1], this.s[2], this.s[3]];
  }

  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Fills `out` with standard normals (Box-Muller, both values of each pair used). */
  fillNormal(out: Float32Array): Float32Array {
    for (let i = 0; i < out.length; i += 2) {
      let u = 0;
      while (u === 0) u = this.uniform();
      const r = Math.sqrt(-2 * Math.log(u));
      const theta = 2 * Math.PI * this.uniform();
      out[i] = r * Math.cos(theta);
      if (i + 1 < out.length) out[i + 1] = r * Math.sin(theta);
    }
    return out;
  }

  /** Fisher-Yates permutation of 0..n-1. */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = p[i];
      p[i] = p[j];
      p[j] = t;
    }
    return p;
  }
}

/** SHA-256's initial hash words: constants with no structure shared with the seed's expansion. */
const COUNTER_KEYS = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/** MurmurHash3's finaliser: a bijection of uint32 whose every output bit depends on every input bit. */
function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
