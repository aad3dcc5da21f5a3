import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PNG } from 'pngjs';
import { encodePng, imageGrid } from '../src/data/png';
import { GanfleetError } from '../src/util/errors';

const H = 28;
const W = 28;
const PAD = 2;

/** Reads the R channel of pngjs's RGBA output at (x, y). */
function red(png: PNG, x: number, y: number): number {
  return png.data[(y * png.width + x) * 4];
}

test('grid of 23 images in a 5x5 layout encodes and decodes', () => {
  const count = 23; // leaves the last two cells empty
  const images = new Float32Array(count * H * W);
  // Image n is uniform at a value that maps to a known byte, except pixel (0,0),
  // which probes clamping/rounding.
  const values = [-1, 1, 0, -0.5, 2, -3];
  for (let n = 0; n < count; n++) {
    images.fill(values[n % values.length], n * H * W, (n + 1) * H * W);
  }
  images[0] = 0.999; // round(1.999*127.5 = 254.87) = 255

  const grid = imageGrid(images, count, 5, 5);
  assert.equal(grid.width, 5 * W + 6 * PAD); // padding on all sides: 152
  assert.equal(grid.height, 152);

  const png = PNG.sync.read(encodePng(grid.width, grid.height, grid.pixels, 1));
  assert.equal(png.width, 152);
  assert.equal(png.height, 152);

  const cell = (n: number) => ({ x: PAD + (n % 5) * (W + PAD), y: PAD + Math.floor(n / 5) * (H + PAD) });
  // Expected bytes for values[]: -1→0, 1→255, 0→round(127.5)=128, -0.5→round(63.75)=64, 2→255 (clamp), -3→0 (clamp)
  const expected = [0, 255, 128, 64, 255, 0];
  for (let n = 0; n < count; n++) {
    const { x, y } = cell(n);
    const e = expected[n % expected.length];
    assert.equal(red(png, x + W - 1, y + H - 1), e, `cell ${n} bottom-right`);
    assert.equal(red(png, x + 13, y + 14), e, `cell ${n} centre`);
  }
  assert.equal(red(png, cell(0).x, cell(0).y), 255);
  assert.equal(red(png, cell(0).x + 1, cell(0).y), 0);

  // Padding (edges and gaps) and empty cells 23 and 24 are black.
  assert.equal(red(png, 0, 0), 0);
  assert.equal(red(png, 151, 151), 0);
  assert.equal(red(png, cell(1).x - 1, cell(1).y + 5), 0); // gap between cells 0 and 1
  assert.equal(red(png, cell(1).x, cell(1).y - 1), 0); // top edge above cell 1
  for (const n of [23, 24]) {
    const { x, y } = cell(n);
    for (let dy = 0; dy < H; dy += 9) for (let dx = 0; dx < W; dx += 9) assert.equal(red(png, x + dx, y + dy), 0);
  }
  assert.equal(png.data[3], 255); // gray decodes as opaque RGBA
});

test('RGB and RGBA round trip exactly', () => {
  const w = 3;
  const h = 2;
  for (const channels of [3, 4] as const) {
    const pixels = new Uint8Array(w * h * channels);
    for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 37 + 11) & 0xff;
    const png = PNG.sync.read(encodePng(w, h, pixels, channels));
    assert.equal(png.width, w);
    assert.equal(png.height, h);
    for (let p = 0; p < w * h; p++) {
      for (let c = 0; c < channels; c++) assert.equal(png.data[p * 4 + c], pixels[p * channels + c]);
      if (channels === 3) assert.equal(png.data[p * 4 + 3], 255);
    }
  }
});

test('rejects mismatched pixel buffers and overfull grids', () => {
  const hasCode = (code: string) => (e: unknown) => e instanceof GanfleetError && e.code === code;
  assert.throws(() => encodePng(2, 2, new Uint8Array(5), 1), hasCode('PNG_SIZE_MISMATCH'));
  // An empty image has no valid PNG (IHDR's width and height are at least 1), even with a pixel buffer that matches.
  for (const [w, h] of [[0, 4], [4, 0], [1.5, 2]]) assert.throws(() => encodePng(w, h, new Uint8Array(w * h), 1), hasCode('PNG_BAD_SIZE'), `${w}x${h}`);
  assert.throws(() => imageGrid(new Float32Array(5 * H * W), 5, 2, 2), hasCode('IMAGE_GRID_SIZE'));
  assert.throws(() => imageGrid(new Float32Array(H * W), 2, 2, 2), hasCode('IMAGE_GRID_SIZE'));
});

test('a grid exactly full (25 images in 5x5, as every sample grid is) is drawn, and one image more is refused', () => {
  const images = new Float32Array(26 * H * W).fill(1);
  const grid = imageGrid(images, 25, 5, 5);
  // The last cell, bottom right, holds its image.
  assert.equal(grid.pixels[(PAD + 4 * (H + PAD)) * grid.width + PAD + 4 * (W + PAD)], 255);
  assert.throws(() => imageGrid(images, 26, 5, 5), (e: unknown) => e instanceof GanfleetError && e.code === 'IMAGE_GRID_SIZE');
});
