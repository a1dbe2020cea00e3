pragma circom 2.0.0;

// Knowledge of a factorisation: the prover knows private a, b (both not 1)
// with a * b = c, where c is public. The smallest useful circuit: a market
// example, not a hard statement.
template Multiplier() {
    signal input a;
    signal input b;
    signal output c;
    // a != 1 and b != 1, so that "c = 1 * c" is not a proof.
    signal inva;
    signal invb;
    inva <-- 1 / (a - 1);
    (a - 1) * inva === 1;
    invb <-- 1 / (b - 1);
    (b - 1) * invb === 1;
    c <== a * b;
}

component main = Multiplier();
