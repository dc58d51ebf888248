"""Enrols the benchmark's TOTP tokens into privacyIDEA in bulk, with the rows its import makes.

    python enrol.py PI_CFG TOKENS_CSV

`pi-manage token import` commits several times per token and managed ~7 tokens/s on this
loaded machine (4 hours for 100,000). This imports the first token of the CSV with
privacyIDEA's own import (`import_token`, what pi-manage calls) and builds every other one
with privacyIDEA's own model: `Token(...)` encrypts the key with the server's encryption key
(`set_otpkey`) exactly as the import does, and the token's tokeninfo rows (timeStep,
hashlib, tokenkind, ...) are copied from the imported first token. Rows are committed in
batches. The benchmark's driver then checks every token it uses through /validate/check, so
a token built wrong shows up as refused calls, not as a faster row.
"""

import sys

from privacyidea.app import create_app
from privacyidea.lib.importotp import parseOATHcsv
from privacyidea.lib.token import import_token
from privacyidea.models import Token, TokenInfo, db

BATCH = 2000


def main(config: str, csv_path: str) -> None:
    app = create_app(config_name="production", config_file=config, silent=True)
    with app.app_context():
        with open(csv_path) as f:
            tokens = parseOATHcsv(f.read())
        serials = list(tokens)
        first = import_token(serials[0], tokens[serials[0]]).token
        template = [(i.Key, i.Value, i.Type, i.Description) for i in first.info_list]
        for start in range(1, len(serials), BATCH):
            batch = []
            for serial in serials[start:start + BATCH]:
                params = tokens[serial]
                token = Token(serial, tokentype=first.tokentype, otplen=int(params["otplen"]),
                              otpkey=params["otpkey"], description=first.description)
                batch.append(token)
            db.session.add_all(batch)
            db.session.flush()  # assigns the ids the tokeninfo rows refer to
            db.session.add_all(TokenInfo(token.id, key, value, Type=kind, Description=about)
                               for token in batch for key, value, kind, about in template)
            db.session.commit()
        print(f"enrolled {len(serials)} tokens; tokeninfo per token: "
              f"{sorted(k for k, *_ in template)}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
