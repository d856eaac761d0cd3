# Reliability probes of issue 33, item 10: a planted model does not silently replace a shipped
# source; a world-writable models folder is refused unless asked; one unreadable source.json is
# skipped by `sources`. Functions only, in the style of probe.sh: source this file from probe.sh
# after its helpers and fixtures ($T/src, $T/img/ok, $PY, probe, check, report, ...), then run
# each name of ROUND2_SOURCES_PROBES. Each writes only under $T/r2src/<probe>/ and sets
# TFTRANSFER_MODELS for its own commands only.

R2S=$T/r2src
SHIPPED=cifar10-resnet20-l2-eps0.5   # the default source, shipped in saved_models/

# plant FOLDER NAME: a copy of the random fixture model $T/src under NAME in FOLDER, with a
# source.json that claims the shipped model's threat model
plant() {
    mkdir -p "$1"
    cp -r "$T/src" "$1/$2"
    printf '{"arch": "resnet20", "attack": "l2", "eps": 0.5, "dataset": "cifar10", "description": "planted"}\n' \
        >"$1/$2/source.json"
}

# A folder in $TFTRANSFER_MODELS holding the shipped default's name: the run says the planted
# model's path (not "the shipped ...") and warns that two models folders hold the name.
p2_planted_source() {
    local d=$R2S/planted
    plant "$d/models" "$SHIPPED"
    chmod o-w "$d/models"
    probe planted-model-under-a-shipped-name env TFTRANSFER_MODELS="$d/models" \
        $PY transfer --target "$T/img/ok" --source "$SHIPPED" --train-images 20 --epochs 1 --out "$d/run"
    expect_success
    check "stderr says the planted path, not the package's own" grep -Eq \
        "source '$SHIPPED': using the model at $d/models/$SHIPPED, not the package's own" "$ERRF"
    check "stderr warns that 2 models folders hold the name" grep -Eq \
        "warning: source '$SHIPPED' is in 2 models folders" "$ERRF"
    check "no line calls it the shipped model" bash -c "! grep -qi 'the shipped' '$ERRF'"
    report
}

# A world-writable models folder: refused with one sentence, usable when asked.
p2_world_writable_models() {
    local d=$R2S/writable
    plant "$d/models" planted-elsewhere
    chmod o+w "$d/models"
    refused world-writable-models-folder \
        "models folder .*/models is writable by every user.*chmod o-w .*TFTRANSFER_ALLOW_WRITABLE_MODELS=1" \
        env TFTRANSFER_MODELS="$d/models" $PY sources --json
    probe world-writable-models-folder-allowed env TFTRANSFER_MODELS="$d/models" \
        TFTRANSFER_ALLOW_WRITABLE_MODELS=1 $PY sources --json
    expect_success
    check "the planted source is listed" grep -q '"planted-elsewhere"' "$OUTF"
    report
}

# One models folder holding an unreadable source.json beside a good model: `sources` lists the
# rest and skips that one with a warning; naming it still gives its sentence.
p2_bad_source_json() {
    local d=$R2S/badjson
    plant "$d/models" good-one
    mkdir -p "$d/models/broken"
    printf '{"arch": "resnet20",' >"$d/models/broken/source.json"
    chmod o-w "$d/models"
    probe sources-with-one-unreadable-source-json env TFTRANSFER_MODELS="$d/models" $PY sources --json
    expect_success "warning: skipped source 'broken': .*source.json is not readable JSON"
    check "the good source and the shipped default are listed" bash -c \
        "grep -q '\"good-one\"' '$OUTF' && grep -q '\"$SHIPPED\"' '$OUTF'"
    check "the broken one is not listed" bash -c "! grep -q '\"broken\"' '$OUTF'"
    report
    refused source-with-unreadable-source-json-named "source.json is not readable JSON" \
        env TFTRANSFER_MODELS="$d/models" $PY transfer --target "$T/img/ok" --source broken \
        --train-images 20 --epochs 1 --out "$d/run"
}

ROUND2_SOURCES_PROBES="p2_planted_source p2_world_writable_models p2_bad_source_json"
