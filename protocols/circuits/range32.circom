pragma circom 2.0.0;

// Knowledge of a 32-bit square root: the prover knows a private x with
// 0 <= x < 2^32 and x * x = square, where square is public. A range check
// (x decomposed into 32 bits) in a few dozen constraints, without circomlib.
template Num2Bits(n) {
    signal input in;
    signal output out[n];
    var acc = 0;
    var e = 1;
    for (var i = 0; i < n; i++) {
        out[i] <-- (in >> i) & 1;
        out[i] * (out[i] - 1) === 0;
        acc += out[i] * e;
        e = e + e;
    }
    acc === in;
}

template Range32Square() {
    signal input x;
    signal input square;
    component bits = Num2Bits(32);
    bits.in <== x;
    square === x * x;
}

component main {public [square]} = Range32Square();
