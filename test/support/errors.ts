// What a call throws, for tests that look at the error itself.

/** The error `f` throws; fails the test when it throws nothing. */
export function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('did not throw');
}
