// Umbrella for documentation generation.
include "tessera/Dialect/Attn/AttnDialect.td"
include "tessera/Dialect/Attn/AttnInterfaces.td"
include "tessera/Dialect/Attn/AttnAttributes.td"
include "tessera/Dialect/Attn/AttnOps.td"
