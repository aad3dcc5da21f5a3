/**
 * The coordinator's live status page: one self-contained HTML document (no
 * CDN, no build step) that polls /api/status and /api/history and draws
 * the curves as inline SVG.
 */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ganfleet</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 10px 20px; display: flex; gap: 24px; align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 18px; margin: 0; }
  header .kv b { font-variant-numeric: tabular-nums; }
  main { display: grid; grid-template-columns: minmax(320px, 420px) 1fr; gap: 16px; padding: 16px 20px; }
  section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 12px 14px; }
  h2 { font-size: 14px; margin: 0 0 8px; color: #4a5365; text-transform: uppercase; letter-spacing: .04em; }
  #grid { width: 100%; image-rendering: pixelated; background: #000; display: block; }
  #strip { width: 100%; }
  svg { width: 100%; height: 200px; display: block; }
  .legend span { margin-right: 12px; } .legend i { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin-right: 4px; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f4; }
  /* A peer's name (up to 160 characters, maybe without a space) wraps rather than widening the page. */
  #workers td:nth-child(2) { overflow-wrap: anywhere; }
  .state { font-weight: 600; } .state.paused, .state.waiting, .state.evaluating { color: #b36b00; } .state.finished { color: #2a7a2a; }
  .wide { grid-column: 1 / -1; }
  @media (max-width: 800px) { main { grid-template-columns: 1fr; } }
</style>
</head>
<body>
<header>
  <h1>ganfleet</h1>
  <div class="kv">state <b id="state" class="state">…</b></div>
  <div class="kv">run <b id="run">…</b></div>
  <div class="kv">step <b id="step">…</b></div>
  <div class="kv">images/s <b id="rate">…</b></div>
  <div class="kv">ETA <b id="eta">…</b></div>
  <div class="kv">workers <b id="nworkers">…</b></div>
  <div class="kv" title="ganfleet's FID (its own MNIST classifier's features, vs the test set; lower is better) at the last --eval-every">FID <b id="fid">–</b></div>
  <div class="kv" title="MNIST score (Inception score formula, ganfleet's classifier; 1 to 10, higher is better)">MNIST score <b id="score">–</b></div>
</header>
<main>
  <section>
    <h2>Samples <span id="gridname"></span></h2>
    <img id="grid" alt="latest sample grid">
    <input id="strip" type="range" min="0" max="0" value="0" aria-label="earlier grids">
  </section>
  <section>
    <h2>Losses</h2>
    <svg id="losses" viewBox="0 0 600 200" preserveAspectRatio="none"></svg>
    <div class="legend"><span><i style="background:#d9480f"></i>D loss</span><span><i style="background:#1c7ed6"></i>G loss</span></div>
    <h2 style="margin-top:12px">D(x) and D(G(z))</h2>
    <svg id="probs" viewBox="0 0 600 200" preserveAspectRatio="none"></svg>
    <div class="legend"><span><i style="background:#2b8a3e"></i>D(x)</span><span><i style="background:#ae3ec9"></i>D(G(z))</span></div>
    <div id="quality" hidden>
      <h2 style="margin-top:12px">FID (--eval-every)</h2>
      <svg id="fids" viewBox="0 0 600 200" preserveAspectRatio="none"></svg>
    </div>
  </section>
  <section class="wide">
    <h2>Workers</h2>
    <table><thead><tr><th>id</th><th>name</th><th>address</th><th>backend</th><th>state</th><th>shard</th><th>last compute</th><th title="how long the open round has waited for this worker's gradients (shown past 1 s)">waited</th><th>frames</th></tr></thead>
    <tbody id="workers"></tbody></table>
  </section>
</main>
<script>
const $ = (id) => document.getElementById(id);
let samples = [], following = true;
$('strip').addEventListener('input', () => { following = +$('strip').value === samples.length - 1; showGrid(+$('strip').value); });
function showGrid(i) {
  if (!samples[i]) return;
  const src = 'samples/' + samples[i];
  if ($('grid').getAttribute('src') !== src) $('grid').setAttribute('src', src);
  $('gridname').textContent = samples[i].replace('.png', '');
}
function fmtTime(s) {
  if (s == null) return '–';
  s = Math.round(s); const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60);
  return h ? h + 'h' + String(m).padStart(2, '0') + 'm' : m + 'm' + String(s % 60).padStart(2, '0') + 's';
}
// How long the open round has waited for a worker, once past 1 s (a round usually takes well under that): a frozen
// worker's grows, while the state still says training, until it answers or is dropped.
function waited(ms) { return ms != null && ms >= 1000 ? (ms / 1000).toFixed(1) + ' s' : ''; }
// The axis spans 0 and every value, and at least "least" ([0, 1] for D's outputs: probabilities with bce;
// lsgan's raw scores can leave that range, and are drawn, not clipped).
function plot(svg, points, series, least) {
  const W = 600, H = 200, pad = 4;
  if (points.length < 2) { svg.innerHTML = ''; return; }
  const x0 = points[0].step, x1 = points[points.length - 1].step;
  let lo = least ? least[0] : 0, hi = least ? least[1] : 0;
  for (const p of points) for (const [k] of series) { lo = Math.min(lo, p[k]); hi = Math.max(hi, p[k]); }
  if (hi === lo) hi = lo + 1;
  const X = (s) => pad + (W - 2 * pad) * (s - x0) / Math.max(1, x1 - x0), Y = (v) => H - pad - (H - 2 * pad) * (v - lo) / (hi - lo);
  svg.innerHTML = series.map(([k, color]) =>
    '<polyline fill="none" stroke="' + color + '" stroke-width="1.5" vector-effect="non-scaling-stroke" points="' +
    points.map((p) => X(p.step).toFixed(1) + ',' + Y(p[k]).toFixed(1)).join(' ') + '"/>').join('') +
    '<text x="6" y="14" font-size="11" fill="#667">' + hi.toFixed(2) + '</text>' +
    (lo < 0 ? '<text x="6" y="' + (H - 6) + '" font-size="11" fill="#667">' + lo.toFixed(2) + '</text>' : '');
  svg.dataset.points = String(points.length);
}
async function refresh() {
  try {
    // Given up after 15 s, so that a coordinator that stopped answering shows as unreachable rather than frozen.
    const get = (u) => fetch(u, { signal: AbortSignal.timeout(15000) }).then((r) => r.json());
    const [st, hi] = await Promise.all([get('api/status'), get('api/history')]);
    $('state').textContent = st.state; $('state').className = 'state ' + st.state;
    $('step').textContent = st.step + ' / ' + st.steps;
    const r = st.run;
    $('run').textContent = r.model + ' · ' + r.loss + ' · batch ' + r.batchSize + ' a worker · Adam ' + r.lr + ', ' + r.beta1 + ', ' + r.beta2 + ' · seed ' + r.seed + (r.dUpdates === 2 ? '' : ' · ' + r.dUpdates + ' D update a step') + (r.wireDtype === 'float32' ? '' : ' · ' + r.wireDtype);
    $('rate').textContent = Math.round(st.imagesPerSecond);
    $('eta').textContent = fmtTime(st.etaSeconds);
    $('nworkers').textContent = st.workers.length;
    $('workers').innerHTML = st.workers.map((w) => '<tr>' + [w.id, w.name, w.address, w.backend, w.state, w.shardSize, w.lastComputeMs.toFixed(1) + ' ms', waited(w.awaitedMs), w.frames]
      .map((v) => '<td>' + String(v).replace(/[&<>]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[c]) + '</td>').join('') + '</tr>').join('');
    samples = st.samples; $('strip').max = Math.max(0, samples.length - 1);
    if (following) { $('strip').value = samples.length - 1; showGrid(samples.length - 1); }
    plot($('losses'), hi.points, [['dLoss', '#d9480f'], ['gLoss', '#1c7ed6']]);
    plot($('probs'), hi.points, [['dReal', '#2b8a3e'], ['dFake', '#ae3ec9']], [0, 1]);
    const ev = st.evaluations, lastEv = ev[ev.length - 1];
    if (lastEv) { $('fid').textContent = lastEv.fid.toFixed(2); $('score').textContent = lastEv.mnistScore.toFixed(2); }
    $('quality').hidden = ev.length < 2;
    plot($('fids'), ev, [['fid', '#e8590c']]);
  } catch (e) { $('state').textContent = 'unreachable'; }
}
// The next refresh 2 s after this one ends, not every 2 s: a coordinator slow to answer (scoring G for
// --eval-every blocks it for seconds at a time) had a request pair more waiting every 2 s, 37 after 50 s.
(async function poll() { await refresh(); setTimeout(poll, 2000); })();
</script>
</body>
</html>
`;
