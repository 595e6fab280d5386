-- The catalog, derived from data/ (services/catalog/pg_store.py rebuilds the rows when the data
-- changes; this is only their shape).
CREATE TABLE catalog_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE catalog_movies (
    id integer PRIMARY KEY,
    title text NOT NULL,
    original_title text NOT NULL,
    year integer,
    genres jsonb NOT NULL,           -- list of names
    imdb_id text,
    tmdb_id integer,
    rating_count integer NOT NULL,
    rating_mean double precision,
    log_count double precision NOT NULL,  -- ln(1 + rating_count): the popularity boost
    tags jsonb NOT NULL,             -- most applied first
    search_text text NOT NULL,       -- tsvector literal of the title's words (see pg_store.py)
    search tsvector GENERATED ALWAYS AS (search_text::tsvector) STORED
);
CREATE INDEX catalog_movies_search ON catalog_movies USING gin (search);
CREATE TABLE catalog_movie_genres (
    genre text NOT NULL,
    movie_id integer NOT NULL REFERENCES catalog_movies(id),
    PRIMARY KEY (genre, movie_id)
);
