/**
 * An MNIST image's shape. Apart from mnist.ts, which reads files, so that the
 * model (pure math) can size its generator's output without loading any I/O.
 */
export const IMAGE_ROWS = 28;
export const IMAGE_COLS = 28;
export const IMAGE_SIZE = IMAGE_ROWS * IMAGE_COLS; // 784
