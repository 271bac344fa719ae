#!/bin/sh
# Build the Debian 12 "bookworm" stack (Python 3.11, Node 18, PHP 8.2): a run and a build
# image, made offline from Debian's packages by scripts/lib/stack.sh (which says how).
#   usage: scripts/stack-bookworm.sh
# Prints both tagged image names on stdout (run image first); progress goes to stderr.
set -eu
umask 022

SUITE=bookworm
# Bump RECIPE when anything in lib/stack.sh or below changes the images (rootfs steps,
# ENV/CMD). The package lists below are hashed as written: reformatting them changes the
# hash and so rebuilds every cache.
RECIPE=2
# Run image: runtimes (npm too: Procfiles say `npm start`), the libraries that compiled
# extensions link against at run time, and the PHP extensions composer checks for at build
# time (so what built also runs), nginx, which serves static.json sites (buildpacks/static),
# and php-fpm with Apache httpd (apache2-bin: the server and its modules, no Debian config),
# behind which heroku-php-apache2 / heroku-php-nginx run PHP apps; systemd-standalone-tmpfiles
# stands in for the systemd php-fpm would otherwise pull in.
PHP_EXT="php-curl php-mbstring php-xml php-zip php-pgsql php-mysql php-sqlite3 php-intl php-gd php-bcmath"
RUN_PACKAGES="bash ca-certificates curl busybox procps tzdata netbase \
python3 nodejs npm php-cli $PHP_EXT nginx \
apache2-bin php-fpm systemd-standalone-tmpfiles \
libpq5 libmariadb3 libssl3 libffi8 zlib1g libxml2 libxslt1.1 libyaml-0-2 libsqlite3-0 libjpeg62-turbo \
libpng16-16 libreadline8 libbz2-1.0 liblzma5 libgmp10"
# Build image: the run image plus what real buildpacks expect to find.
BUILD_PACKAGES="build-essential pkg-config autoconf automake libtool git unzip zip xz-utils \
jq file patch gettext-base wget openssh-client \
python3-dev python3-venv python3-pip composer \
libpq-dev libmariadb-dev libssl-dev libffi-dev zlib1g-dev libxml2-dev libxslt1-dev libyaml-dev \
libsqlite3-dev libjpeg-dev libpng-dev libreadline-dev libbz2-dev liblzma-dev \
libgmp-dev libcurl4-openssl-dev"

. "$(cd "$(dirname "$0")" && pwd)/lib/stack.sh"
stack_build
