#!/usr/bin/env bash
# deploy/lib/pki.sh - a throwaway CA and certificates for labs and tests (sourced). openssl;
# EC P-256 keys as PKCS#8 PEM, X.509 v3 certificates. Everything goes to $PKI_DIR.
#   pki_init                  CA: $PKI_DIR/ca.pem, ca.key
#   pki_cert NAME EKU SAN     $PKI_DIR/NAME.pem + NAME.key (CN NAME) signed by the CA

pki_init() {
    local d=$PKI_DIR
    mkdir -p "$d"
    chmod 700 "$d"
    cat >"$d/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = StackFabric lab CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null
    openssl req -x509 -new -config "$d/ca.cnf" -extensions v3_ca -key "$d/ca.key" \
        -days 3650 -sha256 -out "$d/ca.pem" 2>/dev/null
    chmod 600 "$d/ca.key"
    # The coordinators' TLS session ticket secret (see sf-coordinator --tls-ticket-key-file).
    openssl rand -out "$d/tls-ticket.key" 32
    chmod 600 "$d/tls-ticket.key"
}

# pki_cert NAME EKU SAN - pki/NAME.pem + pki/NAME.key signed by the lab CA.
pki_cert() {
    local name=$1 eku=$2 san=$3 d=$PKI_DIR
    cat >"$d/$name.ext" <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyAgreement
extendedKeyUsage = $eku
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$name.key" 2>/dev/null
    chmod 600 "$d/$name.key"
    openssl req -new -key "$d/$name.key" -subj "/CN=$name" -out "$d/$name.csr" 2>/dev/null
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
        -CAcreateserial -CAserial "$d/ca.srl" -days 825 -sha256 \
        -extfile "$d/$name.ext" -out "$d/$name.pem" 2>/dev/null
    rm -f "$d/$name.csr"
    openssl verify -CAfile "$d/ca.pem" "$d/$name.pem" >/dev/null
}

