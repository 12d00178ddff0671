// Small numeric helpers that reproduce Python's behaviour where JavaScript's differs.

/** Python's round(x) for a float: to the nearest integer, ties to even (Math.round ties up). */
export function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}
