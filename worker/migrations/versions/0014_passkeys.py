"""Passkeys: an actor's key may be a WebAuthn credential, enrolled by a one-time link.

``actor_keys`` gains ``scheme`` (``ed25519``, as every key so far, or ``webauthn``) and
``algorithm`` (a passkey's COSE algorithm: -7 ES256, -8 EdDSA). A passkey's ``key_id`` is
its credential id and its ``public_key`` the COSE key, both base64url. The audit of a key's
registration names its scheme and algorithm, so that ``governance verify`` replays the
registry with them. ``enrollment_links`` keeps the one-time links ``governance actors
enroll`` prints: only the SHA-256 of the token, an expiry, and once used, the key it
enrolled; every link issued and used leaves its audit row, written under the registry's
lock like every registry change.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: The two-key advisory lock every registry change takes (migration 0009).
REGISTRY_LOCK = "7300, 1"

UPGRADE = f"""
ALTER TABLE actor_keys
    ADD COLUMN scheme text NOT NULL DEFAULT 'ed25519' CHECK (scheme IN ('ed25519', 'webauthn')),
    ADD COLUMN algorithm integer;
ALTER TABLE actor_keys DROP CONSTRAINT actor_keys_public_key_check;
ALTER TABLE actor_keys ADD CONSTRAINT actor_keys_public_key_check CHECK (
    (scheme = 'ed25519' AND algorithm IS NULL AND public_key ~ '^[A-Za-z0-9_-]{{43}}$')
    OR (scheme = 'webauthn' AND algorithm IN (-7, -8)
        AND public_key ~ '^[A-Za-z0-9_-]+$' AND length(public_key) <= 2048)
);

CREATE OR REPLACE FUNCTION governance_guard_actor_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'actor keys are never deleted, only revoked (key %)', OLD.key_id;
    END IF;
    IF OLD.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'key % is revoked for good', OLD.key_id;
    END IF;
    IF NEW.revoked_at IS NULL
       OR (NEW.key_id, NEW.actor_id, NEW.public_key, NEW.created_at, NEW.scheme, NEW.algorithm)
          IS DISTINCT FROM
          (OLD.key_id, OLD.actor_id, OLD.public_key, OLD.created_at, OLD.scheme, OLD.algorithm)
    THEN
        RAISE EXCEPTION 'an actor key can only be revoked (key %)', OLD.key_id;
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION governance_audit_actor_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({REGISTRY_LOCK});
    IF TG_OP = 'INSERT' THEN
        INSERT INTO registry_audit (at, action, actor_id, key_id, details)
        VALUES (clock_timestamp(), 'key_added', NEW.actor_id, NEW.key_id,
                CASE WHEN NEW.scheme = 'ed25519'
                     THEN jsonb_build_object('public_key', NEW.public_key)
                     ELSE jsonb_build_object('public_key', NEW.public_key,
                                             'scheme', NEW.scheme,
                                             'algorithm', NEW.algorithm)
                END);
    ELSE
        INSERT INTO registry_audit (at, action, actor_id, key_id, details)
        VALUES (clock_timestamp(), 'key_revoked', NEW.actor_id, NEW.key_id,
                jsonb_build_object('revoked_at', NEW.revoked_at));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TABLE enrollment_links (
    -- The SHA-256 (hex) of the token: the token itself is only ever in the printed link.
    token_hash text        PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{{64}}$'),
    actor_id   text        NOT NULL REFERENCES actors (actor_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    key_id     text        REFERENCES actor_keys (key_id),
    CHECK ((used_at IS NULL) = (key_id IS NULL))
);
CREATE INDEX enrollment_links_actor_idx ON enrollment_links (actor_id, created_at);

-- A link is used once: the only change it ever takes is its use, and it is never deleted.
CREATE FUNCTION governance_guard_enrollment_link() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'enrollment links are never deleted';
    END IF;
    IF OLD.used_at IS NOT NULL THEN
        RAISE EXCEPTION 'this enrollment link was already used';
    END IF;
    IF (NEW.token_hash, NEW.actor_id, NEW.created_at, NEW.expires_at)
       IS DISTINCT FROM (OLD.token_hash, OLD.actor_id, OLD.created_at, OLD.expires_at) THEN
        RAISE EXCEPTION 'an enrollment link can only be used';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER enrollment_links_immutable
    BEFORE UPDATE OR DELETE ON enrollment_links
    FOR EACH ROW EXECUTE FUNCTION governance_guard_enrollment_link();
CREATE TRIGGER enrollment_links_no_truncate
    BEFORE TRUNCATE ON enrollment_links
    FOR EACH STATEMENT EXECUTE FUNCTION governance_refuse_history_change();

CREATE FUNCTION governance_audit_enrollment_link() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({REGISTRY_LOCK});
    IF TG_OP = 'INSERT' THEN
        INSERT INTO registry_audit (at, action, actor_id, details)
        VALUES (clock_timestamp(), 'enrollment_issued', NEW.actor_id,
                jsonb_build_object('expires_at', NEW.expires_at));
    ELSE
        INSERT INTO registry_audit (at, action, actor_id, key_id, details)
        VALUES (clock_timestamp(), 'enrollment_used', NEW.actor_id, NEW.key_id,
                jsonb_build_object('used_at', NEW.used_at));
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER enrollment_links_audit
    AFTER INSERT OR UPDATE ON enrollment_links
    FOR EACH ROW EXECUTE FUNCTION governance_audit_enrollment_link();

-- The one way to register a passkey by a link: the link must be known, unused, unexpired and
-- its actor active; the key is registered for the link's actor and the link used up, both or
-- neither. It runs with its owner's rights, so that the console, which holds the reader's
-- access and no write on the registry, can enroll only what an operator issued a link for:
-- never a key for an actor of its choosing.
CREATE FUNCTION governance_enroll_passkey(
    link_token_hash text, credential_id text, cose_key text, cose_algorithm integer
) RETURNS SETOF actor_keys
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    link record;
    enrolled actor_keys;
BEGIN
    SELECT l.actor_id, l.used_at, l.expires_at <= now() AS expired, a.active INTO link
    FROM enrollment_links AS l JOIN actors AS a USING (actor_id)
    WHERE l.token_hash = link_token_hash
    FOR UPDATE OF l;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'this enrollment link is not known' USING ERRCODE = 'GE001';
    ELSIF link.used_at IS NOT NULL THEN
        RAISE EXCEPTION 'this enrollment link was already used' USING ERRCODE = 'GE001';
    ELSIF link.expired THEN
        RAISE EXCEPTION 'this enrollment link has expired; ask for a new one'
            USING ERRCODE = 'GE001';
    ELSIF NOT link.active THEN
        RAISE EXCEPTION 'actor % is not active', link.actor_id USING ERRCODE = 'GE001';
    END IF;
    INSERT INTO actor_keys (key_id, actor_id, public_key, scheme, algorithm)
    VALUES (credential_id, link.actor_id, cose_key, 'webauthn', cose_algorithm)
    RETURNING * INTO enrolled;
    UPDATE enrollment_links SET used_at = now(), key_id = credential_id
    WHERE token_hash = link_token_hash;
    RETURN NEXT enrolled;
END;
$$;
REVOKE ALL ON FUNCTION governance_enroll_passkey(text, text, text, integer) FROM PUBLIC;
"""

DOWNGRADE = f"""
DROP FUNCTION governance_enroll_passkey(text, text, text, integer);
DROP TABLE enrollment_links;
DROP FUNCTION governance_audit_enrollment_link();
DROP FUNCTION governance_guard_enrollment_link();

CREATE OR REPLACE FUNCTION governance_audit_actor_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock({REGISTRY_LOCK});
    IF TG_OP = 'INSERT' THEN
        INSERT INTO registry_audit (at, action, actor_id, key_id, details)
        VALUES (clock_timestamp(), 'key_added', NEW.actor_id, NEW.key_id,
                jsonb_build_object('public_key', NEW.public_key));
    ELSE
        INSERT INTO registry_audit (at, action, actor_id, key_id, details)
        VALUES (clock_timestamp(), 'key_revoked', NEW.actor_id, NEW.key_id,
                jsonb_build_object('revoked_at', NEW.revoked_at));
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION governance_guard_actor_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'actor keys are never deleted, only revoked (key %)', OLD.key_id;
    END IF;
    IF OLD.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'key % is revoked for good', OLD.key_id;
    END IF;
    IF NEW.revoked_at IS NULL
       OR (NEW.key_id, NEW.actor_id, NEW.public_key, NEW.created_at)
          IS DISTINCT FROM (OLD.key_id, OLD.actor_id, OLD.public_key, OLD.created_at) THEN
        RAISE EXCEPTION 'an actor key can only be revoked (key %)', OLD.key_id;
    END IF;
    RETURN NEW;
END;
$$;

ALTER TABLE actor_keys DROP CONSTRAINT actor_keys_public_key_check;
ALTER TABLE actor_keys DROP COLUMN algorithm, DROP COLUMN scheme;
ALTER TABLE actor_keys ADD CONSTRAINT actor_keys_public_key_check
    CHECK (public_key ~ '^[A-Za-z0-9_-]{{43}}$');
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
